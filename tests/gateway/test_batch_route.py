"""The batch route: lines, custom_ids, file splitting, and hostile lines and batch objects."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from pipeline.errors import BadResponse
from pipeline.gateway.routes.batch import (
    InputFiles,
    check_batch,
    custom_id,
    edit_body,
    read_line,
    split_custom_id,
)
from pipeline.task import Location, Task
from tests.conftest import tiny_image

FP = "ab" * 32


def task(tmp_path: Path, task_id: str = "shirt@home#2", size: int = 24, **fields: object) -> Task:
    image = tiny_image(tmp_path / f"{len(list(tmp_path.iterdir()))}.png", size=size)
    return Task(id=task_id, images=(image,), prompt="Recolor navy",
                where=Location(tmp_path / "job.yaml", 3), root=tmp_path,
                fields={"model": "gpt-image-1", "size": "1024x1024", **fields})


def test_custom_id_carries_task_id_and_fingerprint_both_ways() -> None:
    assert split_custom_id(custom_id("shirt@home#2", FP)) == ("shirt@home#2", FP)
    for foreign in ("nobody-asked-for-this", "x@short", f"@{FP}", ""):
        assert split_custom_id(foreign) is None


async def test_the_body_is_the_json_edit_with_images_inline_or_by_file_id(tmp_path: Path) -> None:
    uploads: list[Path] = []

    async def upload(path: Path) -> str:
        uploads.append(path)
        return "file-123"

    small = task(tmp_path, response_format="b64_json", quality="low")
    body = await edit_body(small, upload)
    assert body["model"] == "gpt-image-1" and body["quality"] == "low"
    assert "response_format" not in body  # gpt-image models answer 400 to it, as live
    (ref,) = body["images"]
    head, _, data = ref["image_url"].partition(",")
    assert head == "data:image/png;base64"
    assert base64.b64decode(data) == small.images[0].read_bytes()
    big = tmp_path / "big.png"
    big.write_bytes(small.images[0].read_bytes() + b"\0" * (5 * 1024 * 1024))
    large = Task(id="big", images=(big,), prompt="p", where=small.where, root=tmp_path,
                 fields=small.fields, mask=small.images[0])
    body = await edit_body(large, upload)
    assert body["images"] == [{"file_id": "file-123"}] and uploads == [big]
    assert "image_url" in body["mask"]


async def test_files_split_at_the_line_and_byte_limits(tmp_path: Path) -> None:
    async def upload(path: Path) -> str:
        raise AssertionError("no image here is large")

    out = tmp_path / "out"
    out.mkdir()
    by_lines = InputFiles(out, upload, max_lines=3)
    for i in range(7):
        await by_lines.add(task(tmp_path, f"t{i}"), FP)
    assert [f.lines for f in by_lines.files] == [3, 3, 1]
    lines = by_lines.files[0].path.read_bytes().splitlines()
    first = json.loads(lines[0])
    assert first["method"] == "POST" and first["url"] == "/v1/images/edits"
    assert split_custom_id(first["custom_id"]) == ("t0", FP)

    one = len(lines[0]) + 1
    by_bytes = InputFiles(tmp_path / "out", upload, max_bytes=int(one * 2.5))
    for i in range(5):
        await by_bytes.add(task(tmp_path, f"u{i}"), FP)
    assert [f.lines for f in by_bytes.files] == [2, 2, 1]
    assert all(f.size <= one * 2.5 for f in by_bytes.files)
    assert [t.id for t, _ in by_bytes.files[1].tasks] == ["u2", "u3"]


@pytest.mark.parametrize("raw", [
    b"not json", b"[]", b'{"custom_id": 5}', b"[" * 100_000, b'{"custom_id": "a"}',
    b'{"custom_id": "a", "response": {"status_code": "200"}}',
])
def test_lines_that_are_no_result_are_none(raw: bytes) -> None:
    assert read_line(raw) is None


def test_result_lines_become_answers_errors_or_never_ran() -> None:
    ok = read_line(json.dumps({"custom_id": "a", "response": {
        "status_code": 200, "request_id": "req_1", "body": {"data": []}}}).encode())
    assert ok is not None and ok.status == 200 and json.loads(ok.body or b"") == {"data": []}
    failed = read_line(json.dumps({"custom_id": "b", "response": {"status_code": 400, "body": {
        "error": {"message": "refused", "code": "moderation_blocked", "type": 7}}}}).encode())
    assert failed is not None and failed.error is not None
    assert (failed.error.status, failed.error.code, failed.error.type) == (
        400, "moderation_blocked", "7")
    never = read_line(b'{"custom_id": "c", "response": null, "error": {"code": "batch_expired"}}')
    assert never is not None and never.status is None and never.code == "batch_expired"


@pytest.mark.parametrize("payload", [
    [], {"id": 3}, {"id": "b", "status": "sleeping"},
    {"id": "b", "status": "completed", "request_counts": {"total": "9"}},
    {"id": "b", "status": "completed", "output_file_id": 12},
    {"id": "b", "status": "completed", "created_at": "today"},
    {"id": "b", "status": "completed", "metadata": ["x"]},
    {"id": "../files/x", "status": "completed"},
    {"id": "b", "status": "completed", "output_file_id": "file-1/../../v1/x"},
])
def test_a_batch_object_of_the_wrong_shape_is_a_bad_response(payload: object) -> None:
    with pytest.raises(BadResponse):
        check_batch(payload)
