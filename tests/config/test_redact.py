"""The one rule for what we keep of a gateway's words (config/redact.py)."""

from __future__ import annotations

import pytest

from pipeline.config.redact import MESSAGE_CHARS, clean, redact

KEY = "k3y-that-looks-like-nothing-0042"


@pytest.mark.parametrize(("text", "expected"), [
    (f"your key {KEY} is wrong", "your key *** is wrong"),
    ("Authorization: Bearer abc.def-ghi", "Authorization: Bearer ***"),
    ("bearer\tXYZ123", "bearer\t***"),
    ("invalid token sk-AbCdEf0123456789abcdef", "invalid token ***"),
    ("GET /x?key=s3cr3t&x=1", "GET /x?key=***&x=1"),
    ("no secret here", "no secret here"),
])
def test_keys_and_bearer_shaped_tokens_are_masked(text: str, expected: str) -> None:
    assert redact(text, [KEY]) == expected


def test_terminal_escapes_and_control_characters_go() -> None:
    text = "\x1b[2J\x1b[31mRED\x1b[0m\x07 done\x1b]0;evil title\x07 \u202eevil\x00"
    assert clean(text) == "RED  done  evil "


def test_a_huge_message_is_cut_after_it_is_redacted() -> None:
    # The key straddles the cut: redacting first leaves none of it behind.
    text = "x" * (MESSAGE_CHARS - 5) + KEY + "y" * 20_000_000
    cleaned = clean(text, [KEY])
    assert cleaned.endswith(" … (cut)") and len(cleaned) == MESSAGE_CHARS + len(" … (cut)")
    assert KEY[:5] not in cleaned


def test_a_short_message_is_left_as_it_is() -> None:
    assert clean("HTTP 400: invalid size") == "HTTP 400: invalid size"
