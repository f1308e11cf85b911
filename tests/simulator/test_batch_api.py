"""The simulator's Batch API over real HTTP: OpenAI's shapes, pagination, cancel, validation,
lines run through the live edit code, and the faults batch mode's tests rely on."""

from __future__ import annotations

import asyncio
import base64
import json
from io import BytesIO
from typing import Any

import aiohttp
from PIL import Image

from pipeline.simulator.app import running_simulator

AUTH = {"Authorization": "Bearer sk-test-not-a-real-key"}


def png_url(colour: tuple[int, int, int] = (10, 200, 30)) -> str:
    out = BytesIO()
    Image.new("RGB", (32, 32), colour).save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def line(custom_id: str, prompt: str = "Make it navy", **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/images/edits",
            "body": {"model": "gpt-image-1", "prompt": prompt, "images": [{"image_url": png_url()}],
                     "size": "1024x1024", "quality": "low", **body}}


class Client:
    def __init__(self, session: aiohttp.ClientSession, root: str):
        self.session, self.root = session, root

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.session.request(method, self.root + path, headers=AUTH, **kw) as r:
            return r.status, await r.json(content_type=None)

    async def upload(self, lines: list[dict[str, Any]] | bytes) -> str:
        data = lines if isinstance(lines, bytes) else b"".join(
            json.dumps(x).encode() + b"\n" for x in lines)
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", data, filename="in.jsonl")
        status, found = await self.call("POST", "/v1/files", data=form)
        assert status == 200, found
        assert found["object"] == "file" and found["purpose"] == "batch"
        return str(found["id"])

    async def create(self, file_id: str, **extra: Any) -> dict[str, Any]:
        status, batch = await self.call("POST", "/v1/batches", json={
            "input_file_id": file_id, "endpoint": "/v1/images/edits",
            "completion_window": "24h", **extra})
        assert status == 200, batch
        return dict(batch)

    async def ended(self, batch_id: str) -> dict[str, Any]:
        while True:  # the batch ends `seconds` after creation; wait for its state
            _, batch = await self.call("GET", f"/v1/batches/{batch_id}")
            if batch["status"] in ("completed", "failed", "expired", "cancelled"):
                return dict(batch)
            await asyncio.sleep(0.01)

    async def content(self, file_id: str) -> list[dict[str, Any]]:
        async with self.session.get(f"{self.root}/v1/files/{file_id}/content",
                                    headers=AUTH) as r:
            return [json.loads(x) for x in (await r.read()).splitlines()]


async def with_client(test: Any, seconds: float = 0.05, **faults: Any) -> None:
    async with running_simulator() as sim, aiohttp.ClientSession() as session:
        client = Client(session, sim.base_url.removesuffix("/v1"))
        status, _ = await client.call("POST", "/_sim/batch", json={"seconds": seconds, **faults})
        assert status == 200
        await test(client)


async def test_a_batch_runs_its_lines_through_the_edit_and_answers_in_openai_shapes() -> None:
    async def test(c: Client) -> None:
        file_id = await c.upload([line("a"), line("b", n=2), line("c", size="800x600")])
        created = await c.create(file_id, metadata={"imgedit_token": "tok"})
        assert created["object"] == "batch" and created["status"] == "validating"
        assert created["expires_at"] - created["created_at"] == 24 * 3600
        batch = await c.ended(created["id"])
        assert batch["status"] == "completed" and batch["metadata"] == {"imgedit_token": "tok"}
        assert batch["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
        outputs = {x["custom_id"]: x for x in await c.content(batch["output_file_id"])}
        assert set(outputs) == {"a", "b"}
        body = outputs["b"]["response"]["body"]
        assert outputs["b"]["response"]["status_code"] == 200 and len(body["data"]) == 2
        Image.open(BytesIO(base64.b64decode(body["data"][0]["b64_json"]))).verify()
        assert body["usage"]["output_tokens"] > 0
        (error,) = await c.content(batch["error_file_id"])
        assert error["custom_id"] == "c" and error["response"]["status_code"] == 400
        assert error["response"]["body"]["error"]["param"] == "size"

    await with_client(test)


async def test_list_pages_newest_first_with_after_and_limit() -> None:
    async def test(c: Client) -> None:
        file_id = await c.upload([line("a")])
        ids = [(await c.create(file_id))["id"] for _ in range(5)]
        _, page = await c.call("GET", "/v1/batches?limit=2")
        assert [b["id"] for b in page["data"]] == ids[::-1][:2] and page["has_more"]
        _, rest = await c.call("GET", f"/v1/batches?limit=10&after={page['last_id']}")
        assert [b["id"] for b in rest["data"]] == ids[::-1][2:] and not rest["has_more"]
        status, _ = await c.call("GET", "/v1/batches?limit=0")
        assert status == 400

    await with_client(test)


async def test_cancel_and_the_errors_of_a_bad_request() -> None:
    async def test(c: Client) -> None:
        file_id = await c.upload([line(f"x{i}") for i in range(20)])
        batch = await c.create(file_id)
        status, cancelling = await c.call("POST", f"/v1/batches/{batch['id']}/cancel")
        assert status == 200 and cancelling["status"] == "cancelling"
        assert (await c.ended(batch["id"]))["status"] == "cancelled"
        status, _ = await c.call("POST", f"/v1/batches/{batch['id']}/cancel")
        assert status == 409
        status, error = await c.call("GET", "/v1/batches/batch_nope")
        assert status == 404 and error["error"]["code"] == "not_found"
        async with c.session.get(c.root + "/v1/batches") as r:  # no key
            assert r.status == 401

    await with_client(test, seconds=2.0)


async def test_a_bad_input_file_fails_the_batch_at_validation() -> None:
    async def test(c: Client) -> None:
        file_id = await c.upload(json.dumps(line("a")).encode() + b"\n{not json\n"
                                 + json.dumps(line("a")).encode() + b"\n")
        batch = await c.ended((await c.create(file_id))["id"])
        assert batch["status"] == "failed"
        assert [e["code"] for e in batch["errors"]["data"]] == ["invalid_json_line",
                                                                "duplicate_custom_id"]

    await with_client(test)


async def test_faults_expiry_failures_hostile_and_unknown_lines() -> None:
    async def test(c: Client) -> None:
        lines = [line("ok1"), line("ok2"), line("bad", prompt="FAILME"),
                 line("evil", prompt="HOSTILE")]
        batch = await c.ended((await c.create(await c.upload(lines)))["id"])
        assert batch["status"] == "completed"
        outputs = {x["custom_id"]: x for x in await c.content(batch["output_file_id"])}
        assert set(outputs) == {"ok1", "ok2", "evil", "nobody-asked-for-this"}
        evil = outputs["evil"]["response"]["body"]["data"][0]["b64_json"]
        assert not base64.b64decode(evil).startswith(b"\x89PNG")
        (bad,) = await c.content(batch["error_file_id"])
        assert bad["response"]["body"]["error"]["code"] == "moderation_blocked"

        _, _ = await c.call("POST", "/_sim/batch", json={"seconds": 0.05, "expire": True})
        batch = await c.ended((await c.create(await c.upload(lines[:2])))["id"])
        assert batch["status"] == "expired" and batch["expired_at"]
        (expired,) = await c.content(batch["error_file_id"])
        assert expired["response"] is None and expired["error"]["code"] == "batch_expired"

    await with_client(test, fail="FAILME", hostile="HOSTILE", unknown_custom_id=True)
