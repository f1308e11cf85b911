"""One line of a batch input file, run through the same edit code as a live request.

A line is `{"custom_id", "method": "POST", "url": "/v1/images/edits", "body"}`;
its body is OpenAI's JSON edit body: `images: [{"image_url": data URL} |
{"file_id"}]`, `mask` likewise, and the form's other fields. It becomes the
parts a multipart form would have given (`image[]` files, text fields), then
goes through `request.parse_edit`, `render.open_inputs` and `render.render`,
and is answered with the live answer's body and usage. Its result is an output
line `{"id", "custom_id", "response": {"status_code", "request_id", "body"},
"error"}` in OpenAI's documented shape.

It never reads the network and never keeps a key.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.simulator.faults import NOT_AN_IMAGE
from pipeline.simulator.render import RenderCache, open_inputs, render
from pipeline.simulator.request import Edit, GatewayError, Part, parse_edit
from pipeline.simulator.usage import usage
from pipeline.task import IMAGE_FORMATS

ENDPOINT = "/v1/images/edits"
EXTENSIONS = {v: k for k, v in IMAGE_FORMATS.items()}
MODERATION = GatewayError(400, "Your request was rejected by the safety system.",
                          code="moderation_blocked")


@dataclass(frozen=True)
class BatchFaults:
    """What a batch does wrong on purpose (`POST /_sim/batch`)."""

    fail: str | None = None  # lines whose prompt holds this answer 400 moderation_blocked
    hostile: str | None = None  # lines whose prompt holds this answer 200 with no image
    expire: bool = False  # batches expire with only the first half of their lines run
    unknown_custom_id: bool = False  # output files carry one line nobody asked for
    drop_create: bool = False  # a create makes the batch, then closes the connection unanswered

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> BatchFaults:
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown batch fault option(s): {sorted(unknown)}")
        return cls(**raw)


def result_line(custom_id: str, status: int, body: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": f"batch_req_{secrets.token_hex(12)}", "custom_id": custom_id,
            "response": {"status_code": status, "request_id": f"req_{secrets.token_hex(12)}",
                         "body": body},
            "error": None}


def error_line(custom_id: str, code: str, message: str) -> dict[str, Any]:
    """A request the batch never ran (expired): no response, an error instead."""
    return {"id": f"batch_req_{secrets.token_hex(12)}", "custom_id": custom_id,
            "response": None, "error": {"code": code, "message": message}}


def _image_part(ref: Any, param: str, index: int, files: Mapping[str, bytes]) -> Part:
    """An `{"image_url": "data:..."}` or `{"file_id": ...}` reference, as a form file."""
    if not isinstance(ref, Mapping):
        raise GatewayError(400, f"'{param}' must be an object with image_url or file_id.",
                           param=param)
    if isinstance(ref.get("file_id"), str):
        data = files.get(ref["file_id"])
        if data is None:
            raise GatewayError(400, f"No such file: {ref['file_id']}.", param=param,
                               code="file_not_found")
        return Part(param, f"{param}-{index}.png", "image/png", data)
    url = ref.get("image_url")
    head, _, payload = url.partition(",") if isinstance(url, str) else ("", "", "")
    if not head.startswith("data:") or not head.endswith(";base64"):
        # The simulator fetches nothing: only data URLs and uploaded files.
        raise GatewayError(400, f"'{param}' must be a base64 data URL or a file id.", param=param)
    content_type = head[5:].removesuffix(";base64")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise GatewayError(400, f"'{param}' is not valid base64.", param=param) from None
    return Part(param, f"{param}-{index}.{EXTENSIONS.get(content_type, 'png')}", content_type,
                data)


def parts_of(body: Any, files: Mapping[str, bytes]) -> list[Part]:
    """The JSON edit body as the multipart parts `parse_edit` reads."""
    if not isinstance(body, Mapping):
        raise GatewayError(400, "The request body must be a JSON object.", code="invalid_body")
    model = body.get("model")
    if isinstance(model, str) and not model.startswith("gpt-image"):
        raise GatewayError(400, "JSON image edits support GPT image models only.", param="model")
    images = body.get("images")
    if not isinstance(images, list):
        images = []
    parts = [_image_part(ref, "image[]", i, files) for i, ref in enumerate(images)]
    if body.get("mask") is not None:
        parts.append(_image_part(body["mask"], "mask", 0, files))
    for key, value in body.items():
        if key in ("images", "mask") or value is None:
            continue
        text = str(value).lower() if isinstance(value, bool) else str(value)
        parts.append(Part(key, None, "text/plain", text.encode()))
    return parts


class LineRunner:
    """Runs lines with the live edit's code and render cache."""

    def __init__(self, cache: RenderCache):
        self.cache = cache

    async def run(self, line: Mapping[str, Any], files: Mapping[str, bytes],
                  faults: BatchFaults) -> dict[str, Any]:
        custom_id = str(line["custom_id"])
        try:
            edit = parse_edit(parts_of(line.get("body"), files))
            if faults.fail and faults.fail in edit.prompt:
                raise MODERATION
            if faults.hostile and faults.hostile in edit.prompt:
                return result_line(custom_id, 200, _hostile())
            body = await self._answer(edit)
        except GatewayError as exc:
            error = {"message": exc.message, "type": exc.type, "param": exc.param,
                     "code": exc.code}
            return result_line(custom_id, exc.status, {"error": error})
        return result_line(custom_id, 200, body)

    async def _answer(self, edit: Edit) -> dict[str, Any]:
        rendered = self.cache.get(edit.render_key)
        if rendered is None:
            inputs = await asyncio.to_thread(open_inputs, edit)
            rendered = await asyncio.to_thread(render, edit, *inputs)
            self.cache.put(edit.render_key, rendered)
        return {"created": int(time.time()), "data": [{"b64_json": rendered.b64}] * edit.n,
                "background": edit.background, "output_format": edit.output_format,
                "size": "{}x{}".format(*edit.size),
                "usage": usage(edit.prompt, edit.quality, edit.size, edit.n, rendered.inputs)}


def _hostile() -> dict[str, Any]:
    """A 200 no client should take for an image: bytes that are no image, a usage that
    lies about its types, and a field nobody asked for."""
    return {"created": "yesterday", "data": [{"b64_json": base64.b64encode(NOT_AN_IMAGE).decode(),
                                              "revised_prompt": {"nested": [[[[]]]]}}],
            "usage": {"input_tokens": "many", "output_tokens": -1}}


def check_lines(data: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The input file's lines, and the errors that fail the whole batch at validation, as
    OpenAI reports them: `{"code", "message", "line"}`."""
    lines: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except (ValueError, RecursionError):
            errors.append({"code": "invalid_json_line", "line": number,
                           "message": "This line is not parseable as valid JSON."})
            continue
        problem = _line_problem(line, seen)
        if problem:
            errors.append({"code": problem[0], "line": number, "message": problem[1]})
        else:
            seen.add(line["custom_id"])
            lines.append(line)
    if not lines and not errors:
        errors.append({"code": "empty_file", "line": None, "message": "The input file is empty."})
    return lines, errors


def _line_problem(line: Any, seen: set[str]) -> tuple[str, str] | None:
    if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
        return "missing_required_parameter", "Each line needs a string custom_id."
    if line["custom_id"] in seen:
        return "duplicate_custom_id", f"The custom_id {line['custom_id']!r} is not unique."
    if line.get("method") != "POST":
        return "invalid_method", "The method must be POST."
    if line.get("url") != ENDPOINT:
        return "mismatched_endpoint", f"The url must be the batch's endpoint {ENDPOINT}."
    return None
