"""What we keep of a gateway's words: cut short, stripped of control characters, redacted.

Owns the one rule every message from outside goes through before it reaches the
ledger, a sidecar, the summary, `status`, `export`, the report or a log: at most
MESSAGE_CHARS characters, no terminal escapes or other control characters, and
no key — neither the key we were given nor anything shaped like a bearer token
(an old ledger is cleaned on the way out with the same rule, key or no key).

Lives under config, the lowest layer that knows what a secret is, so the
gateway, the ledger and the views all use this one function. Never logs,
stores or returns a secret it was handed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
MESSAGE_CHARS = 2000  # enough for any real error message; a 20 MB one is cut here

# Terminal escape sequences (CSI and OSC) go whole; any other C0/C1 control character,
# DEL, and the invisible direction and zero-width marks that can disguise text become a
# space.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?")
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
# What a credential looks like when a gateway echoes one: "Bearer <anything>", the
# "sk-..." keys of OpenAI and new-api relays, and "key=..." in a query string.
_TOKENS = re.compile(
    r"(?i)(\bbearer\s+)[^\s\"',;]+"
    r"|\bsk-[A-Za-z0-9_\-]{6,}"
    r"|\b((?:api[_-]?key|access[_-]?token|key|token)=)[^\s&\"',;]+"
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with each secret, and anything shaped like a bearer token, masked."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    return _TOKENS.sub(_mask_token, text)


def _mask_token(match: re.Match[str]) -> str:
    keep = match.group(1) or match.group(2) or ""  # "Bearer " or "key=" stays readable
    return keep + MASK


def strip_controls(text: str) -> str:
    return _CONTROLS.sub(" ", _ESCAPES.sub("", text))


def clean(text: str, secrets: Iterable[str] = (), *, limit: int | None = MESSAGE_CHARS) -> str:
    """The message as we may store and print it. Redacted before it is cut, so a key that
    straddles the cut cannot leave its first half behind; a huge message is first cut to a
    few times `limit`, so cleaning it stays cheap."""
    cut = False
    if limit is not None and len(text) > 4 * limit:
        text, cut = text[: 4 * limit], True
    text = strip_controls(redact(text, secrets))
    if limit is not None and len(text) > limit:
        text, cut = text[:limit], True
    return text + " … (cut)" if cut else text


def clean_or_none(text: str | None, secrets: Iterable[str] = ()) -> str | None:
    return None if text is None else clean(text, secrets)
