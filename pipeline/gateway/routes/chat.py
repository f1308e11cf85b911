"""The chat route: `POST {base_url}/chat/completions`, the inputs as `image_url` data-URL
parts of one user message, the edited image read back from the answer.

The relay answers an image model's picture inside the message content as markdown,
`![image](data:image/png;base64,...)` (new-api relay/channel/gemini/relay-gemini.go,
the OpenAI-shaped answer built from Gemini's inlineData parts); other gateways put
it in content parts (`image_url`) or `message.images`. All three are read. An answer
with no image (the model talked instead) is a BadResponse naming what it said.
"""

from __future__ import annotations

import json
import re
from contextlib import ExitStack
from typing import Any

from pipeline.config.settings import Provider
from pipeline.errors import BadResponse, RouteUnfit
from pipeline.gateway.routes.base import Decoded, Request, inline
from pipeline.task import Task

NAME = "chat"
# ![alt](url): a data: URL or an http(s) one; the URL has no spaces or closing parenthesis.
MARKDOWN_IMAGE = re.compile(r"!\[[^\]]{0,200}\]\(((?:data:|https?://)[^)\s]+)\)")


async def request(task: Task, provider: Provider, files: ExitStack) -> Request:
    content: list[dict[str, Any]] = [{"type": "text", "text": task.prompt}]
    for path in task.images:
        mime, data = inline(path)
        content.append({"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}})
    body = {"model": task.model, "stream": False,
            "messages": [{"role": "user", "content": content}]}
    if "user" in task.fields:
        body["user"] = str(task.fields["user"])
    return Request(f"{provider.base_url}/chat/completions",
                   json.dumps(body, ensure_ascii=False).encode(),
                   {"Content-Type": "application/json"})


def decode(payload: Any, task: Task, max_bytes: int) -> Decoded:
    """The image URLs the message holds (data: URLs are decoded by the client's checks)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("choices"), list):
        keys = ", ".join(sorted(map(str, payload))[:6]) if isinstance(payload, dict) else ""
        raise RouteUnfit(f"the chat route answered {task.model} without `choices` "
                         f"(keys: {keys}): this route cannot serve the model")
    urls: list[str] = []
    said = ""
    for choice in payload["choices"]:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        found, text = _images_in(message)
        urls += found
        said = said or text
    if not urls:
        excerpt = " ".join(said.split())[:200] or "nothing"
        raise BadResponse(f"the chat answer holds no image; the model said: {excerpt}")
    sources: list[bytes | str] = list(urls)
    return Decoded(sources, payload.get("usage"))


def _images_in(message: dict[str, Any]) -> tuple[list[str], str]:
    """Image URLs in a message (markdown in text, image_url parts, `images`), and its text."""
    content = message.get("content")
    parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
    urls, texts = [], []
    for part in parts:
        if not isinstance(part, dict):
            continue
        text = part.get("text")
        if isinstance(text, str):
            texts.append(text)
            urls += MARKDOWN_IMAGE.findall(text)
        urls += _image_url(part)
    for extra in message.get("images") or []:
        urls += _image_url(extra) if isinstance(extra, dict) else []
    return urls, " ".join(texts)


def _image_url(part: dict[str, Any]) -> list[str]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    return [url] if isinstance(url, str) and url.startswith(("data:", "http")) else []
