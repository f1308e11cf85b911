"""The script a user would write instead of imgedit: the official SDK and a semaphore.

    python bench/sdk_baseline.py ROOT --base-url URL [--concurrency 64]

Edits every ROOT/catalog/**/*.jpg with one prompt and writes `<stem>.edited.png`
beside it. Plain and honest: one AsyncOpenAI client, no retries (a failure
is counted and printed), no ledger, no sidecar, no atomic write.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
from pathlib import Path

from openai import AsyncOpenAI

sys.path.insert(0, str(Path(__file__).resolve().parent))
from catalog import GLOB, MODEL, PROMPT, QUALITY, SIZE


async def edit_one(client: AsyncOpenAI, gate: asyncio.Semaphore, path: Path) -> bool:
    async with gate:
        try:
            with path.open("rb") as image:
                result = await client.images.edit(model=MODEL, image=image, prompt=PROMPT,
                                                  size=SIZE, quality=QUALITY)
        except Exception as exc:  # the naive script logs and moves on
            print(f"{path.name}: {exc}", file=sys.stderr)
            return False
        data = base64.b64decode(result.data[0].b64_json)
        path.with_name(f"{path.stem}.edited.png").write_bytes(data)
        return True


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    client = AsyncOpenAI(base_url=args.base_url, api_key="bench", max_retries=0)
    gate = asyncio.Semaphore(args.concurrency)
    paths = sorted(args.root.glob(GLOB))
    async with client:
        results = await asyncio.gather(*(edit_one(client, gate, p) for p in paths))
    failed = results.count(False)
    print(f"{len(results) - failed} succeeded, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
