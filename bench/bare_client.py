"""The least any client can do: aiohttp, a semaphore, and the answer written as it comes.

    python bench/bare_client.py ROOT --base-url URL [--concurrency 50]

The same requests as the SDK script (every ROOT/catalog/**/*.jpg, one prompt,
`<stem>.edited.png` beside it), with nothing a user could trust: no check of
the manifest or the inputs before sending, no ledger, no retry, no check of the
image, no atomic write. Its figure is the floor of the machine, not a rival:
what the simulator, loopback and Python's start cost before a client does any
work of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from catalog import GLOB, MODEL, PROMPT, QUALITY, SIZE


async def edit_one(session: aiohttp.ClientSession, gate: asyncio.Semaphore, url: str,
                   path: Path) -> bool:
    async with gate:
        form = aiohttp.FormData()
        for name, value in (("model", MODEL), ("prompt", PROMPT), ("size", SIZE),
                            ("quality", QUALITY)):
            form.add_field(name, value)
        form.add_field("image", path.read_bytes(), filename=path.name,
                       content_type="image/jpeg")
        try:
            async with session.post(url, data=form) as response:
                body = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}")
        except Exception as exc:  # like the SDK script: say it and move on
            print(f"{path.name}: {exc}", file=sys.stderr)
            return False
    try:
        data = base64.b64decode(json.loads(body)["data"][0]["b64_json"])
    except (ValueError, LookupError, TypeError) as exc:
        print(f"{path.name}: no image in the answer ({exc!r})", file=sys.stderr)
        return False
    path.with_name(f"{path.stem}.edited.png").write_bytes(data)
    return True


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    gate = asyncio.Semaphore(args.concurrency)
    paths = sorted(args.root.glob(GLOB))
    url = args.base_url.rstrip("/") + "/images/edits"
    headers = {"Authorization": "Bearer bench"}
    # No pool limit: the semaphore is the only bound, as in the SDK script.
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        results = await asyncio.gather(*(edit_one(session, gate, url, p) for p in paths))
    failed = results.count(False)
    print(f"{len(results) - failed} succeeded, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
