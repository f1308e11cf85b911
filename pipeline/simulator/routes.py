"""The three ways an edit reaches the simulator's relay, and how each is answered.

- images: multipart `POST /v1/images/edits`. By channel, as the relay does:
  openai models go upstream as the form (request.py); gemini models cannot be
  converted (relay/channel/gemini/adaptor.go ConvertImageRequest serves imagen
  models only, so relay/image_handler.go answers 500 convert_request_failed),
  or, with `gemini_images: chat`, come back chat-shaped as the relay's newest
  code answers edits; jimeng models lose their input images (relay/channel/
  jimeng/adaptor.go ConvertImageRequest sends the prompt only) and the jimeng
  body comes back as it is (its DoResponse reads edits with the OpenAI handler,
  relay/channel/openai/relay-openai.go, which copies the upstream body through).
- chat: `POST /v1/chat/completions`, images as `image_url` data-URL parts. Gemini
  models answer the image as a markdown data URL in the message content
  (relay/channel/gemini/relay-gemini.go); openai image models are no chat
  models upstream (404, passed through by service/error.go RelayErrorHandler);
  jimeng's adaptor passes the chat body to an API that does not read it
  (answered here as the relay's 500 bad_response_body).
- gemini: `POST /v1beta/models/{model}:generateContent` (router/relay-router.go),
  `inline_data` in, `inlineData` out; only gemini models (relay/gemini_handler.go:
  other adaptors' ConvertGeminiRequest fail: 500 convert_request_failed).

Each reader returns a Job: the Edit to render and how to answer it. It never
renders, delays or counts (app.py does).
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from io import BytesIO
from typing import Any

from aiohttp import web
from PIL import Image

from pipeline.simulator import relay
from pipeline.simulator.faults import SimulatorOptions
from pipeline.simulator.render import Rendered
from pipeline.simulator.request import (
    Edit,
    GatewayError,
    Part,
    form_text,
    parse_edit,
    read_form,
    read_json,
)
from pipeline.simulator.usage import usage

NOT_A_CHAT_MODEL = ("This is not a chat model and thus not supported in the "
                    "v1/chat/completions endpoint. Did you mean to use v1/completions?")


@dataclass(frozen=True)
class Job:
    edit: Edit
    shape: str  # images | jimeng | chat | gemini: the body the answer takes


def _blank() -> Part:
    out = BytesIO()
    Image.new("RGB", (64, 64), (255, 255, 255)).save(out, "PNG")
    return Part("image", "blank.png", "image/png", out.getvalue())


BLANK = _blank()  # what jimeng renders from: the relay dropped the input images


async def images(request: web.Request, options: SimulatorOptions) -> tuple[Job, list[Part]]:
    parts = await read_form(request)
    model = form_text(parts).get("model", "")
    if not model:
        raise relay.RelayError(400, "Model name not specified, model name cannot be empty")
    kind = relay.channel(model)
    if kind == "gemini":
        if options.gemini_images == "convert":
            raise relay.convert_failed("not supported model for image generation, only "
                                       "imagen models are supported")
        return Job(_simple(parts, model), "chat"), parts
    if kind == "jimeng":
        edit = _simple(parts, model)
        return Job(replace(edit, images=(BLANK,), mask=None), "jimeng"), parts
    return Job(parse_edit(parts), "images"), parts


def _simple(parts: list[Part], model: str) -> Edit:
    """An edit for a channel that reads only the prompt and the images (gemini, jimeng)."""
    prompt = form_text(parts).get("prompt", "")
    found = tuple(p for p in parts if p.filename is not None and p.field.startswith("image"))
    if not found:
        raise GatewayError(400, "image is required", code="convert_request_failed",
                           type="new_api_error")
    return Edit(model, prompt, found, None, 1, (1024, 1024), "png", "auto", None, None)


async def chat(request: web.Request, options: SimulatorOptions) -> Job:
    body = await read_json(request)
    if not isinstance(body, Mapping) or not body.get("messages"):
        raise GatewayError(400, "Invalid request: field messages is required",
                           code="invalid_request", type="new_api_error")
    model = str(body.get("model") or "")
    kind = relay.channel(model)
    if kind == "openai":
        raise GatewayError(404, NOT_A_CHAT_MODEL, param="model", code=None)
    if kind == "jimeng":
        raise relay.RelayError(500, "invalid character 'R' looking for beginning of value",
                               code="bad_response_body", type="openai_error")
    prompt, found = "", list[Part]()
    for message in body["messages"]:
        content = message.get("content") if isinstance(message, Mapping) else None
        for part in content if isinstance(content, list) else [{"text": content}]:
            if not isinstance(part, Mapping):
                continue
            if isinstance(part.get("text"), str):
                prompt = f"{prompt} {part['text']}".strip()
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, Mapping) else url
            if isinstance(url, str):
                found.append(_data_url_part(url, len(found)))
    return Job(_chat_edit(model, prompt, found), "chat")


async def gemini(request: web.Request, options: SimulatorOptions) -> Job:
    model, _, action = request.match_info["target"].partition(":")
    if action != "generateContent":
        raise relay.not_implemented()
    kind = relay.channel(model)
    body = await read_json(request)
    if kind != "gemini":
        raise relay.convert_failed("not implemented")
    prompt, found = "", list[Part]()
    for content in (body.get("contents") if isinstance(body, Mapping) else None) or []:
        for part in (content.get("parts") if isinstance(content, Mapping) else None) or []:
            if not isinstance(part, Mapping):
                continue
            if isinstance(part.get("text"), str):
                prompt = f"{prompt} {part['text']}".strip()
            data = part.get("inline_data") or part.get("inlineData")
            if isinstance(data, Mapping):
                mime = str(data.get("mime_type") or data.get("mimeType") or "")
                found.append(_part(mime, data.get("data"), len(found)))
    return Job(_chat_edit(model, prompt, found), "gemini")


def _chat_edit(model: str, prompt: str, found: list[Part]) -> Edit:
    if not prompt:
        raise GatewayError(400, "Invalid request: the message holds no text", param="messages",
                           code="invalid_request", type="new_api_error")
    if not found:  # a text-only request: Gemini draws from the prompt alone
        found = [BLANK]
    return Edit(model, prompt, tuple(found), None, 1, (1024, 1024), "png", "auto", None, None)


def _data_url_part(url: str, index: int) -> Part:
    head, _, data = url.partition(",")
    if not (head.startswith("data:") and head.endswith(";base64")):
        raise GatewayError(400, f"get file data from '{url[:40]}' failed: only data: URLs are "
                           "read here", param="messages")
    return _part(head[5:-7], data, index)


def _part(mime: str, data: Any, index: int) -> Part:
    try:
        raw = base64.b64decode(str(data), validate=True)
    except (binascii.Error, ValueError):
        raise GatewayError(400, "decode base64 image data failed", param="contents") from None
    if mime not in ("image/png", "image/jpeg", "image/webp"):
        raise GatewayError(400, f"mime type is not supported by Gemini: '{mime}'",
                           param="contents")
    return Part("image", f"inline-{index}", mime, raw)


def answer(job: Job, rendered: Rendered) -> dict[str, Any]:
    """The 200 body for a chat, gemini or jimeng job (images answers are app.py's)."""
    edit, b64 = job.edit, rendered.b64
    created = int(time.time())
    if job.shape == "jimeng":
        return {"code": 10000, "message": "Success", "status": 10000,
                "request_id": secrets.token_hex(10), "time_elapsed": "5.1s",
                "data": {"binary_data_base64": [b64], "image_urls": None}}
    tokens = usage(edit.prompt, None, (1024, 1024), 1, rendered.inputs)
    if job.shape == "gemini":
        return {"candidates": [{"content": {"role": "model", "parts": [
                    {"text": "Here is the edited image."},
                    {"inlineData": {"mimeType": rendered.content_type, "data": b64}}]},
                    "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": tokens["input_tokens"],
                                  "candidatesTokenCount": 1290,
                                  "totalTokenCount": tokens["input_tokens"] + 1290},
                "modelVersion": edit.model}
    content = f"![image](data:{rendered.content_type};base64,{b64})"
    return {"id": f"chatcmpl-{secrets.token_hex(12)}", "object": "chat.completion",
            "created": created, "model": edit.model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": tokens["input_tokens"], "completion_tokens": 1290,
                      "total_tokens": tokens["input_tokens"] + 1290}}
