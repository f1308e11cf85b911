"""The gemini route: Gemini's native `POST {origin}/v1beta/models/{model}:generateContent`,
the prompt and inputs as `inline_data` parts, the image read back from `inlineData`.

The relay passes it through to the Gemini channel (new-api router/relay-router.go
serves /v1beta/models/*; relay/channel/gemini/relay-gemini-native.go), under the same
key as /v1. A prompt the upstream blocked (`promptFeedback.blockReason`, or a candidate
that ended for safety with no image) is a StatusError coded `prompt_blocked`: terminal,
as the relay's own prompt_blocked.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from typing import Any

from pipeline.config.settings import Provider
from pipeline.errors import BadResponse, RouteUnfit, StatusError
from pipeline.gateway.answer import b64_image
from pipeline.gateway.routes.base import Decoded, Request, inline, origin
from pipeline.task import Task

NAME = "gemini"
SAFETY_ENDS = {"SAFETY", "PROHIBITED_CONTENT", "IMAGE_SAFETY", "BLOCKLIST", "SPII",
               "IMAGE_PROHIBITED_CONTENT", "RECITATION"}


async def request(task: Task, provider: Provider, files: ExitStack) -> Request:
    parts: list[dict[str, Any]] = [{"text": task.prompt}]
    for path in task.images:
        mime, data = inline(path)
        parts.append({"inline_data": {"mime_type": mime, "data": data}})
    body = {"contents": [{"role": "user", "parts": parts}],
            "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]}}
    url = f"{origin(str(provider.base_url))}/v1beta/models/{task.model}:generateContent"
    return Request(url, json.dumps(body, ensure_ascii=False).encode(),
                   {"Content-Type": "application/json"})


def decode(payload: Any, task: Task, max_bytes: int) -> Decoded:
    if not isinstance(payload, dict) or not ("candidates" in payload
                                             or "promptFeedback" in payload):
        keys = ", ".join(sorted(map(str, payload))[:6]) if isinstance(payload, dict) else ""
        raise RouteUnfit(f"the gemini route answered {task.model} without `candidates` "
                         f"(keys: {keys}): this route cannot serve the model")
    blocked = (payload.get("promptFeedback") or {}).get("blockReason")
    sources: list[bytes | str] = []
    said, ends = [], []
    for candidate in payload.get("candidates") or []:
        if not isinstance(candidate, dict):
            continue
        ends.append(str(candidate.get("finishReason") or ""))
        content = candidate.get("content")
        for part in (content.get("parts") if isinstance(content, dict) else None) or []:
            if not isinstance(part, dict):
                continue
            data = part.get("inlineData") or part.get("inline_data")
            if isinstance(data, dict) and str(data.get("mimeType") or data.get("mime_type")
                                              or "").startswith("image/"):
                sources.append(b64_image(data.get("data"), max_bytes=max_bytes,
                                         what="inlineData.data"))
            elif isinstance(part.get("text"), str):
                said.append(part["text"])
    if not sources:
        why = blocked or next((e for e in ends if e in SAFETY_ENDS), None)
        if why:
            raise StatusError(200, f"the upstream blocked the prompt ({why})",
                              type="gemini_error", code="prompt_blocked")
        excerpt = " ".join(" ".join(said).split())[:200] or "nothing"
        raise BadResponse(f"the gemini answer holds no image; the model said: {excerpt}")
    return Decoded(sources, payload.get("usageMetadata"))
