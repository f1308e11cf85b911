"""What each model accepts and what it costs, read from config/models.yaml.

Owns the per-model limits (image count, size, formats, prompt length, sizes,
qualities, response_format, mask), the price tables behind the cost estimate,
and the cheap file sniffing those checks need (magic bytes, header dimensions).
It never decodes pixels, never sends requests, and never decides how a task
is built: it judges a finished Task and says what is wrong with it.
"""

from __future__ import annotations

import difflib
import functools
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from pipeline.config import cost
from pipeline.config.routes import DEFAULT_ROUTE, ROUTES, RoutePlan
from pipeline.config.settings import read_yaml
from pipeline.config.takes import refusal
from pipeline.errors import ConfigError
from pipeline.task import REQUEST_FIELDS, Task

MB = 1024 * 1024  # sizes are MiB, and said so
# OpenAI's edits reference: the mask "must be a valid PNG file, less than 4MB, and have
# the same dimensions as image". A model may say otherwise with `mask_max_mb`.
MASK_MAX_MB = 4.0


def sniff_format(head: bytes) -> str | None:
    """'png', 'jpeg' or 'webp' from a file's first 12+ bytes; None for anything else."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


@dataclass(frozen=True)
class FileFacts:
    """What a stat and the first bytes say about a file, without decoding it."""

    size: int
    format: str | None  # png / jpeg / webp, or None when it is no image we know
    # Width and height, when a check that decoded the file (kept in the ledger) knows them.
    dimensions: tuple[int, int] | None = None


def probe(path: Path) -> FileFacts:
    """One open, one small read. Raises OSError (missing, unreadable, a folder)."""
    with open(path, "rb") as fh:
        head = fh.read(16)
        size = os.fstat(fh.fileno()).st_size
    return FileFacts(size, sniff_format(head))


@dataclass(frozen=True)
class Shape:
    width: int
    height: int
    alpha: bool


def image_shape(path: Path) -> Shape | None:
    """Dimensions from the header (Pillow opens lazily); None when unreadable.

    Cached by (path, size, mtime): a mask shared by thousands of tasks is opened once.
    """
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return _shape(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=1024)
def _shape(path: str, size: int, mtime_ns: int) -> Shape | None:
    try:
        with warnings.catch_warnings():
            # A huge image is not our business here: we only read its header.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
                return Shape(image.width, image.height, alpha)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


@dataclass(frozen=True)
class ModelSpec:
    name: str
    edits: bool = False
    batch: bool = False  # may it go through the provider's Batch API?
    max_images: int = 1
    max_image_mb: float = 4.0
    formats: tuple[str, ...] = ("png",)
    square: bool = False
    prompt_max: int = 1000
    sizes: tuple[str, ...] = ()
    qualities: tuple[str, ...] = ()
    response_format: bool = True  # may `response_format` be sent to it?
    mask: bool = False
    mask_max_mb: float = MASK_MAX_MB
    price: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # quality->size->USD
    usage_price: Mapping[str, float] | None = None  # USD per million tokens, by usage key
    takes: tuple[str, ...] | None = None  # request fields it takes; None: every one
    free_size: Mapping[str, Any] | None = None  # any size by this rule (gpt-image-2)
    output_tokens: Mapping[str, int] | None = None  # per 1024x1024 image, by quality
    input_image_tokens: Mapping[str, int] | None = None  # {base, tile}
    route: str = DEFAULT_ROUTE
    fallback_route: str | None = None
    edit_routes: tuple[str, ...] = ROUTES  # the routes that carry its input images
    max_answer_mb: float = 64.0  # the largest answer body (or downloaded image) accepted

    def price_per_image(self, quality: str | None, size: str | None) -> float:
        """Unknown or `auto` quality costs as the dearest; unknown size as 1024x1024 or dearest."""
        known = self.price.get(quality) if quality is not None else None
        tables = [known] if known is not None else list(self.price.values())
        return max((_size_price(table, size) for table in tables), default=0.0)


def _size_price(table: Mapping[str, float], size: str | None) -> float:
    if size in table:
        return table[str(size)]
    if "*" in table:
        return table["*"]
    if size in (None, "auto") and "1024x1024" in table:
        return table["1024x1024"]
    return max(table.values(), default=0.0)


_NEEDED_FOR_EDITS = ("max_images", "max_image_mb", "formats", "prompt_max", "sizes", "qualities")
_KINDS: dict[str, Any] = {
    "edits": bool, "batch": bool, "square": bool, "response_format": bool, "mask": bool,
    "max_images": int, "prompt_max": int, "max_image_mb": (int, float),
    "mask_max_mb": (int, float), "max_answer_mb": (int, float), "formats": list,
    "sizes": list, "qualities": list,
    "price": Mapping, "usage_price": Mapping, "takes": list, "free_size": Mapping,
    "output_tokens": Mapping, "input_image_tokens": Mapping, "edit_routes": list,
    "route": str, "fallback_route": str,
}


def _kind_problems(name: str, raw: Mapping[str, Any], where: str) -> list[str]:
    problems = []
    for key, kind in _KINDS.items():
        value = raw.get(key)
        if value is not None and not isinstance(value, kind):
            problems.append(f"{where}: {name}.{key}: {value!r} has the wrong type")
    prices = raw.get("price")
    for quality, table in (prices.items() if isinstance(prices, Mapping) else ()):
        ok = isinstance(table, Mapping) and table and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in table.values())
        if not ok:
            problems.append(f"{where}: {name}.price.{quality}: expected {{size: USD, ...}}")
    return problems


def _spec(name: str, raw: Any, where: str) -> tuple[ModelSpec | None, list[str]]:
    if not isinstance(raw, Mapping):
        return None, [f"{where}: {name}: expected a mapping of limits"]
    unknown = set(raw) - set(ModelSpec.__dataclass_fields__) - {"name"}
    problems = [f"{where}: {name}: unknown key {k!r}" for k in sorted(map(str, unknown))]
    problems += _kind_problems(name, raw, where)
    if raw.get("edits", False):
        missing = [k for k in _NEEDED_FOR_EDITS if k not in raw]
        problems += [f"{where}: {name}: missing {k!r} (needed for a model that edits)"
                     for k in missing]
    for key in ("route", "fallback_route"):
        if isinstance(raw.get(key), str) and raw[key] not in ROUTES:
            problems.append(f"{where}: {name}.{key}: {raw[key]!r} is not one of {ROUTES}")
    problems += [f"{where}: {name}.takes: {f!r} is not a request field"
                 for f in raw.get("takes") or () if f not in REQUEST_FIELDS]
    if problems:
        return None, problems
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    try:
        return ModelSpec(name=name, **values), []
    except TypeError as exc:
        return None, [f"{where}: {name}: {exc}"]


class Models(Mapping[str, ModelSpec]):
    """Model name -> ModelSpec, with the checks and prices the manifest needs."""

    def __init__(self, specs: Mapping[str, ModelSpec]):
        self._specs = dict(specs)

    @classmethod
    def load(cls, path: Path) -> Models:
        """Read models.yaml. Raises ConfigError naming every bad entry."""
        data = read_yaml(path)
        specs: dict[str, ModelSpec] = {}
        problems: list[str] = []
        for name, raw in data.items():
            spec, found = _spec(str(name), raw, str(path))
            problems += found
            if spec is not None:
                specs[str(name)] = spec
        if problems:
            raise ConfigError("\n".join(problems))
        return cls(specs)

    def __getitem__(self, name: str) -> ModelSpec:
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def check(
        self, task: Task, facts: Mapping[Path, FileFacts] | None = None
    ) -> list[tuple[str, str]]:
        """(field, message) for everything `task` asks that its model cannot do.

        `facts` holds what the caller already probed: a file missing from it was
        found unusable and reported by the caller, so it is skipped here. Without
        `facts` every file is probed here, and one that cannot be read is reported.
        """
        spec = self.get(task.model)
        if spec is None:
            return [("model", self._unknown(task.model))]
        if not spec.edits:
            editors = ", ".join(n for n, s in self._specs.items() if s.edits)
            return [("model", f"{spec.name} cannot edit images; use one of: {editors}")]
        if task.route not in spec.edit_routes:
            return [("model", f"{spec.name} cannot edit here: its {task.route} route does not "
                              "carry the input images to the upstream (the relay drops them), "
                              "so an edit would ignore the photo and still be paid for; "
                              "use another model")]
        problems = _request_problems(spec, task)
        problems += _image_problems(spec, task, facts)
        if task.mask is not None and spec.mask:
            problems += _mask_problems(spec, task, facts)
        return problems

    def estimate(self, task: Task,
                 known: Callable[[Path], tuple[int, int] | None] | None = None) -> float:
        """USD for one task: from tokens (input images and prompt included) for a
        token-priced model, else price per image (by quality and size) times n; 0 if unpriced.
        `known`: an input's width and height when the caller already has them (the check
        pass's, or the ledger's); any other input's are read from its header."""
        spec = self.get(task.model)
        if spec is None:
            return 0.0
        if spec.output_tokens and spec.usage_price:
            shape = _dimensions if known is None else (lambda p: known(p) or _dimensions(p))
            return cost.token_estimate(spec, task, shape)
        quality, size = task.fields.get("quality"), task.fields.get("size")
        return spec.price_per_image(quality, size) * task.n

    def route_plans(self) -> dict[str, RoutePlan]:
        return {name: RoutePlan(s.route, s.fallback_route) for name, s in self._specs.items()}

    def refusal(self, model: str, field: str, value: Any) -> str | None:
        """Why `model` refuses `field: value`, or None (also for a model we do not know:
        that is reported once, as the task's model)."""
        spec = self.get(model)
        return None if spec is None else refusal(spec, field, value)

    def leaves_out(self, model: str, field: str, value: Any) -> bool:
        """A default `field: value` that `model` refuses but another model takes: meant for
        the others, so left out of this model's tasks. A value no model takes (a typo) is
        kept, and reported as the mistake it is."""
        if self.refusal(model, field, value) is None:
            return False
        return any(s.edits and refusal(s, field, value) is None for s in self._specs.values())

    def cost_from_usage(self, model: str, usage: Mapping[str, Any]) -> float | None:
        """USD from an answer's token counts, when the model has `usage_price`."""
        spec = self.get(model)
        if spec is None or not spec.usage_price:
            return None
        counted = [
            usage[key] * per_million / 1_000_000
            for key, per_million in spec.usage_price.items()
            if isinstance(usage.get(key), int | float) and not isinstance(usage.get(key), bool)
        ]
        return sum(counted) if counted else None

    def _unknown(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._specs), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        known = ", ".join(self._specs)
        return f"unknown model {name!r}{hint} (models.yaml knows: {known})"


def _dimensions(path: Path) -> tuple[int, int] | None:
    shape = image_shape(path)
    return None if shape is None else (shape.width, shape.height)


def _request_problems(spec: ModelSpec, task: Task) -> list[tuple[str, str]]:
    problems = []
    name = spec.name
    if len(task.prompt) > spec.prompt_max:
        problems.append(("prompt", f"is {len(task.prompt)} characters; {name} takes at most "
                                   f"{spec.prompt_max}: shorten it"))
    for key, value in task.fields.items():
        if key != "model" and (why := refusal(spec, key, value)):
            problems.append((key, why))
    if task.mask is not None and not spec.mask:
        problems.append(("mask", f"{name} takes no mask: remove it, or use a model that does"))
    return problems


_SKIP = "skip"  # the caller already reported this file


def _facts(path: Path, facts: Mapping[Path, FileFacts] | None) -> FileFacts | str | None:
    if facts is not None:
        return facts.get(path, _SKIP)
    try:
        return probe(path)
    except OSError:
        return None


def _image_problems(
    spec: ModelSpec, task: Task, facts: Mapping[Path, FileFacts] | None
) -> list[tuple[str, str]]:
    name = spec.name
    problems = []
    if len(task.images) > spec.max_images:
        problems.append(("images", f"{len(task.images)} images, but {name} takes at most "
                                   f"{spec.max_images}: split the task or drop some"))
    for i, path in enumerate(task.images):
        where = f"images[{i}]" if len(task.images) > 1 else "images"
        found = _facts(path, facts)
        if not isinstance(found, FileFacts):
            if found is None:
                problems.append((where, f"cannot read {path}"))
            continue
        if found.size > spec.max_image_mb * MB:
            problems.append((where, f"{path} is {found.size / MB:.1f} MiB; {name} takes at "
                                    f"most {spec.max_image_mb:g} MiB: shrink it (or "
                                    "prepare: {max_side: 2048})"))
        if found.format not in spec.formats:
            problems.append((where, f"{path} is {found.format or 'no known image format'}; "
                                    f"{name} takes {'/'.join(spec.formats)}: convert it"))
        if spec.square and found.format is not None:
            shape = found.dimensions or _dimensions(path)
            if shape and shape[0] != shape[1]:
                problems.append((where, f"{path} is {shape[0]}x{shape[1]}; {name} "
                                        "takes only square images: crop or pad it"))
    return problems


def _mask_problems(
    spec: ModelSpec, task: Task, facts: Mapping[Path, FileFacts] | None
) -> list[tuple[str, str]]:
    mask = task.mask
    assert mask is not None
    found = _facts(mask, facts)
    if not isinstance(found, FileFacts):
        return [("mask", f"cannot read {mask}")] if found is None else []
    problems = []
    if found.format != "png":
        problems.append(("mask", f"{mask} is {found.format or 'no known image format'}; a "
                                 "mask must be a PNG with transparency: convert it"))
        return problems
    if found.size > spec.mask_max_mb * MB:
        problems.append(("mask", f"{mask} is {found.size / MB:.1f} MiB; a mask for "
                                 f"{spec.name} must be under {spec.mask_max_mb:g} MiB"))
    shape = image_shape(mask)
    first = image_shape(task.images[0]) if task.images else None
    if shape is not None and not shape.alpha:
        problems.append(("mask", f"{mask} has no transparency; the transparent area marks "
                                 "what to edit: add an alpha channel"))
    if shape and first and (shape.width, shape.height) != (first.width, first.height):
        problems.append(("mask", f"{mask} is {shape.width}x{shape.height} but the first image "
                                 f"is {first.width}x{first.height}: they must match"))
    return problems
