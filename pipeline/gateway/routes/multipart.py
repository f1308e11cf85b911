"""A small multipart/form-data body, built as bytes in one pass.

The images route sends most requests as one bytes body (a body in parts is a dozen
socket writes). Built through aiohttp's FormData and `as_bytes()`, that body cost
~13% of the event loop in the 2,000-task overhead run (a payload object, a header
dict and a writer per part); joined here it is a few string operations per part.

The bytes are what FormData(quote_fields=False) writes, part for part (a test
compares them): each part's Content-Type, then its Content-Disposition with the
name and filename quoted (a backslash before `\\` and `"`). `label` makes a file
name safe for a header: a control character (a newline in a file name is legal on
Linux) becomes `_`, where FormData refuses the whole form and the run died on it.
A file's name is only a label, whose extension the relay reads.

Never streams: large files go through aiohttp's FormData (images.py).
"""

from __future__ import annotations

import os
import re
from typing import BinaryIO, NamedTuple

TEXT = "text/plain; charset=utf-8"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class File(NamedTuple):
    filename: str
    content_type: str
    data: bytes | BinaryIO  # a file to stream is aiohttp's to send: `form` takes bytes


def form(parts: list[tuple[str, str | File]]) -> tuple[bytes, str]:
    """(body, Content-Type) of the parts, in order: (name, text) or (name, File)."""
    boundary = os.urandom(16).hex()
    dash = f"--{boundary}\r\n".encode()
    pieces: list[bytes] = []
    for name, value in parts:
        if isinstance(value, str):
            pieces += (dash, _head(TEXT, name), value.encode(), b"\r\n")
        elif isinstance(value.data, bytes):
            pieces += (dash, _head(value.content_type, name, value.filename), value.data,
                       b"\r\n")
        else:
            raise TypeError(f"the part {name!r} is a file to stream: send it with FormData")
    pieces.append(f"--{boundary}--\r\n".encode())
    return b"".join(pieces), f"multipart/form-data; boundary={boundary}"


def _head(content_type: str, name: str, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{_quoted(name)}"'
    if filename is not None:
        disposition += f'; filename="{_quoted(filename)}"'
    head = f"Content-Type: {content_type}\r\nContent-Disposition: {disposition}\r\n\r\n"
    return head.encode(errors="replace")  # a name not valid UTF-8 (Linux allows it): `?`


def label(filename: str) -> str:
    """The file's name with each control character, which would end a header, as `_`."""
    return _CONTROL.sub("_", filename)


def _quoted(value: str) -> str:
    """Quoted as FormData quotes (and never ending the header)."""
    return label(value.replace("\\", "\\\\").replace('"', '\\"'))
