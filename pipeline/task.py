"""The vocabulary every layer shares: a Task to run and the States it moves through.

A Task is pure data, fully resolved by the manifest: absolute paths, merged
defaults, the output template with its placeholder values. It never touches
the network, the ledger or the disk.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Fields a task may send to the gateway besides images, mask and prompt.
REQUEST_FIELDS = (
    "model",
    "n",
    "size",
    "quality",
    "background",
    "output_format",
    "output_compression",
    "input_fidelity",
    "response_format",
    "user",
)

IMAGE_FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
EXT_MARK = "\0ext\0"  # stands for {ext} in Task.output_shape


class State(enum.StrEnum):
    PENDING = "pending"
    SUBMITTED = "submitted"
    BATCHED = "batched"  # in a provider batch: its answer comes when the batch is collected
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"  # a request may have been billed but no answer came


@dataclass(frozen=True)
class Location:
    """Where something was written: a file, a 1-based line and column (0 = unknown)."""

    file: Path
    line: int = 0
    column: int = 0  # only YAML syntax errors know it; editors jump to file:line:column

    def __str__(self) -> str:
        if not self.line:
            return str(self.file)
        column = f":{self.column}" if self.column else ""
        return f"{self.file}:{self.line}{column}"


@dataclass(frozen=True)
class Prepare:
    """How inputs are converted before upload (`prepare:` in a manifest)."""

    max_side: int | None = None  # longest side in pixels; larger images are scaled down
    format: str | None = None  # "png" or "jpeg"; None keeps PNG and JPEG as they are
    quality: int = 90  # JPEG quality

    def key(self) -> str:
        """The settings as text: part of the fingerprint and of the cache's file names."""
        return f"side={self.max_side or 0},format={self.format or 'same'},q={self.quality}"


@dataclass(frozen=True)
class Task:
    id: str
    images: tuple[Path, ...]
    prompt: str
    where: Location
    root: Path  # the manifest's folder: relative outputs resolve against it
    mask: Path | None = None
    # Request fields (model, n, size, ...) after defaults were merged; model is always there.
    fields: Mapping[str, Any] = field(default_factory=dict)
    output: str = "{dir}/{stem}.edited.{ext}"
    # Values for the output template besides {ext} and {index}: dir, stem, id, CSV columns.
    placeholders: Mapping[str, str] = field(default_factory=dict)
    route: str = "images"  # how its edit travels: images, chat or gemini (config/routes.py)
    left_out: tuple[str, ...] = ()  # fields of `defaults` its model does not take
    prepare: Prepare | None = None  # convert inputs before upload (run/prepare.py)

    @property
    def model(self) -> str:
        return str(self.fields["model"])

    @property
    def n(self) -> int:
        return int(self.fields.get("n", 1))

    def output_path(self, index: int, ext: str) -> Path:
        """The file for output `index` in format `ext`.

        With n > 1 and no {index} in the template, "-{index}" goes before the
        extension, so several outputs never share a name.
        """
        return Path(self.output_name(index, ext))

    def output_name(self, index: int, ext: str) -> str:
        """output_path as text, not normalised: checking 100k tasks' outputs builds no Path."""
        template = self.output
        if self.n > 1 and "{index}" not in template:
            head, dot, tail = template.rpartition(".")
            template = f"{head}-{{index}}.{tail}" if dot else f"{template}-{{index}}"
        values = {**self.placeholders, "id": self.id, "index": str(index), "ext": ext}
        return _joined(str(self.root), template.format_map(values))  # an absolute one wins

    def output_shape(self, index: int) -> str | None:
        """output_name(index, EXT_MARK): one render for every image format (replace the
        mark with each; a pass over 100k tasks renders once per output, not three times).
        None when the template formats {ext} itself (`{ext:>5}`): render each format."""
        if "{ext:" in self.output or "{ext!" in self.output:
            return None
        return self.output_name(index, EXT_MARK)

    def sidecar_path(self, ext: str) -> Path:
        """`<first output without extension>.json`, beside the outputs."""
        return self.output_path(0, ext).with_suffix(".json")


def _joined(folder: str, name: str) -> str:
    """os.path.join(folder, name), without its generic work where `/` is the separator
    (posixpath's rule: an absolute name wins, else one `/` between): run per output of
    every task on every pass."""
    if os.sep != "/":
        return os.path.join(folder, name)
    if name.startswith("/"):
        return name
    return folder + name if not folder or folder.endswith("/") else f"{folder}/{name}"
