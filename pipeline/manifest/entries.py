"""Entries of a manifest's `tasks:` list, and the Tasks each one stands for.

Owns the per-entry schema (which keys, which values), merging `defaults` into
an entry, expanding plain, `glob` and `csv` entries into Tasks one at a time,
and task ids. It never touches image files and never remembers more than it
must: ids are counted only when a derived id could repeat.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config.models import Models
from pipeline.config.routes import Routing
from pipeline.errors import Problem
from pipeline.manifest import compare, csvsource, globsource, prepared
from pipeline.manifest.values import INTS, as_list, check_value, did_you_mean, has_placeholders
from pipeline.manifest.yamlpos import LineMap
from pipeline.task import REQUEST_FIELDS, Location, Prepare, Task

DEFAULT_OUTPUT = "{dir}/{stem}.edited.{ext}"
TASK_KEYS = ("id", "images", "mask", "prompt", "output", *REQUEST_FIELDS, "models", "prepare",
             "glob", "exclude", "csv")
# Keys whose text a csv row fills; `output` keeps its placeholders for Task.output_path.
CSV_FILLED = ("images", "mask", "prompt", *REQUEST_FIELDS)
# Without these an entry cannot become tasks at all; other bad values are left out and reported.
_STRUCTURAL = ("images", "mask", "glob", "exclude", "csv", "models")
@dataclass(frozen=True)
class Entry:
    """One item of `tasks:` with defaults merged in; glob and csv entries stand for many tasks."""

    index: int
    where: Location
    kind: str  # "task", "glob" or "csv"
    values: Mapping[str, Any]  # defaults, then the entry's own keys; invalid values left out
    lines: Mapping[str, int]  # line of each key (a default's line when inherited)
    problems: tuple[Problem, ...] = ()
    expandable: bool = True  # False when images/glob/csv are too broken to build tasks
    own: frozenset[str] = frozenset()  # keys the entry sets itself (the rest are defaults)

    def at(self, key: str) -> Location:
        return Location(self.where.file, self.lines.get(key, self.where.line))

    def name(self, key: str) -> str:
        return f"tasks[{self.index}].{key}"


def parse_entry(index: int, raw: Any, where: Location, defaults: Mapping[str, Any],
                default_lines: Mapping[str, int]) -> Entry:
    """Check one entry's keys and values against the schema; touches no files."""
    if not isinstance(raw, LineMap):
        message = "expected a mapping like {images: shirt.jpg, prompt: ...}"
        return Entry(index, where, "task", {}, {}, (Problem(where, f"tasks[{index}]", message),),
                     expandable=False)
    kind = "glob" if "glob" in raw else "csv" if "csv" in raw else "task"
    lines = {**default_lines, **{str(k): raw.line_of(k) for k in raw}}
    entry = Entry(index, where, kind, {}, lines)
    problems = [Problem(entry.at(str(key)), entry.name(str(key)), did_you_mean(key, TASK_KEYS))
                for key in raw if key not in TASK_KEYS]
    values = compare.settle(defaults, {k: v for k, v in raw.items() if k in TASK_KEYS})
    problems += _combination_problems(entry, raw, values)
    broken = False
    for key, value in list(values.items()):
        if kind == "csv" and key in CSV_FILLED and any(map(has_placeholders, as_list(value))):
            continue  # checked per row, once filled
        wrong = check_value(key, value)
        if wrong is not None and (key in raw or has_placeholders(value)):
            # Defaults were checked once at load; only placeholder text waits until here.
            problems.append(Problem(entry.at(key), entry.name(key), wrong))
        if wrong is not None:
            del values[key]
            broken = broken or key in _STRUCTURAL
    if not values.get("prompt"):
        problems.append(Problem(where, entry.name("prompt"),
                                "missing: say what to do with the images"))
    if kind != "glob" and "images" not in values and "images" not in raw:
        hint = "e.g. images: 'catalog/{sku}.jpg'" if kind == "csv" else "the file(s) to edit"
        problems.append(Problem(where, entry.name("images"), f"missing: give {hint}"))
        broken = True
    if compare.names(values):
        lines["model"] = lines.get("models", where.line)  # a model's problem points at models:
        values.setdefault("output", compare.DEFAULT_OUTPUT)
    if "id" in values:
        values["id"] = str(values["id"])
        if kind == "glob" and (wrong := _glob_id_problem(values["id"])):
            problems.append(Problem(entry.at("id"), entry.name("id"), wrong))
            del values["id"]
    return Entry(index, where, kind, values, lines, tuple(problems),
                 expandable=not broken and not ("glob" in raw and "csv" in raw),
                 own=frozenset(map(str, raw)))


def _combination_problems(entry: Entry, raw: LineMap, values: Mapping[str, Any]) -> list[Problem]:
    """Keys that do not go together."""
    found = []
    if "glob" in raw and "csv" in raw:
        found.append((entry.at("csv"), entry.name("csv"),
                      "an entry takes glob or csv, not both: split it in two"))
    if "exclude" in raw and "glob" not in raw:
        found.append((entry.at("exclude"), entry.name("exclude"),
                      "exclude leaves files out of a glob: this entry has no glob"))
    if compare.both_given(raw):
        found.append((entry.at("models"), entry.name("models"),
                      "give model or models, not both"))
    if compare.names(values) and (wrong := compare.output_problem(values.get("output"))):
        found.append((entry.at("output"), entry.name("output"), wrong))
    return [Problem(*f) for f in found]


def _glob_id_problem(template: str) -> str | None:
    """A glob entry makes many tasks: its id must differ per file, through {dir}/{stem}."""
    try:
        names = set(csvsource.placeholders(template))
    except ValueError as exc:
        return f"{exc}: write a literal brace as {{{{ or }}}}"
    if not names or not names <= {"dir", "stem"}:
        return ("a glob entry's id must use {stem} (and may use {dir}) so each file's task "
                "gets its own, e.g. 'shirts/{stem}'; or leave id out")
    return None


@dataclass(frozen=True)
class Made:
    """One expansion step: a task, or the problems that kept a task from being made."""

    entry: Entry
    task: Task | None
    problems: tuple[Problem, ...] = ()
    origin: Location | None = None  # the csv row a task came from
    matched: bool = False  # the first image came from the entry's glob
    warning: Problem | None = None  # worth saying, but not wrong: a glob that matched nothing


class _Ids:
    """Derived ids: the first input's path, plus #2, #3... when a file is used again."""

    def __init__(self, track: bool):
        self.counts: dict[str, int] | None = {} if track else None

    def derive(self, base: str) -> str:
        if self.counts is None:
            return base
        count = self.counts.get(base, 0) + 1
        self.counts[base] = count
        return base if count == 1 else f"{base}#{count}"


def expand(entries: tuple[Entry, ...], root: Path, default_model: str,
           ours: Callable[[Path], bool] | None = None, *,
           models: Models | None = None, routing: Routing | None = None) -> Iterator[Made]:
    """Tasks and problems in manifest order, one at a time. `ours(path)`: a file imgedit
    wrote, which no glob takes. With `models`, a field from `defaults` that a task's
    model refuses is left out of that task (Task.left_out)."""
    # Derived ids can only repeat across entries, or between rows of one csv entry;
    # a lone glob needs no memory of the ids it gave, which keeps a run flat.
    deriving = [e for e in entries if "id" not in e.values]
    ids = _Ids(len(deriving) > 1 or any(e.kind == "csv" for e in deriving))
    build = _Builder(root, default_model, ids, ours, models, routing)
    for entry in entries:
        if entry.problems:  # once per entry, not once per task it expands to
            yield Made(entry, None, entry.problems)
        if not entry.expandable:
            continue
        if entry.kind == "glob":
            yield from _glob_tasks(build, entry)
        elif entry.kind == "csv":
            yield from _csv_tasks(build, entry)
        else:
            yield from build.each(entry, entry.values)


def resolve(root: Path, name: str) -> Path:
    """A manifest path made absolute against the manifest's folder, `..` folded away."""
    return Path(os.path.normpath(os.path.join(root, os.path.expanduser(name))))


def relative(root: Path, path: Path, prefix: str | None = None) -> str:
    """`products/shirt.jpg` for a file inside the tree, the absolute path for one outside.
    `prefix`: the root with a separator at its end, when the caller has it at hand."""
    # Plain string work: this runs once per task, and Path.relative_to is slow at 100k.
    text, prefix = str(path), prefix or os.path.join(str(root), "")
    if text.startswith(prefix):
        text = text[len(prefix):]
    return text.replace(os.sep, "/")


class _Builder:
    def __init__(self, root: Path, default_model: str, ids: _Ids,
                 ours: Callable[[Path], bool] | None, models: Models | None,
                 routing: Routing | None):
        self.root, self.default_model, self.ids = root, default_model, ids
        self.ours = ours
        self.models, self.routing = models, routing
        # Entry index -> its fields: the same for every file of a glob, worked out once.
        self.entry_fields: dict[int, tuple[dict[str, Any], tuple[str, ...]]] = {}
        self._last: tuple[Path | None, str] = (None, "")  # the last path made relative
        self._prefix = os.path.join(str(root), "")
        self._routes: dict[str, str] = {}  # model -> its route

    def route(self, model: str) -> str:
        """The model's route on this provider, once per model."""
        route = self._routes.get(model)
        if route is None:
            route = self._routes[model] = self.routing.route(model) if self.routing else "images"
        return route

    def relative(self, path: Path) -> str:
        """relative(root, path), once per path: a glob's file is asked twice in a row."""
        if path is not self._last[0]:
            self._last = (path, relative(self.root, path, self._prefix))
        return self._last[1]

    def fields(self, entry: Entry, values: Mapping[str, Any]) -> tuple[dict[str, Any],
                                                                        tuple[str, ...]]:
        """The request fields, and the defaults left out because the model refuses them."""
        if values is not entry.values:  # a csv row's, or one model's of `models:`
            return self._fields(entry, values)
        known = self.entry_fields.get(entry.index)
        if known is None:
            known = self.entry_fields[entry.index] = self._fields(entry, values)
        return dict(known[0]), known[1]  # a dict of its own for each task

    def _fields(self, entry: Entry, values: Mapping[str, Any]) -> tuple[dict[str, Any],
                                                                         tuple[str, ...]]:
        fields = {k: values[k] for k in REQUEST_FIELDS if k in values}
        fields.setdefault("model", self.default_model)
        if self.models is None:
            return fields, ()
        model = str(fields["model"])
        left_out = tuple(k for k, v in fields.items() if k not in entry.own and k != "model"
                         and self.models.leaves_out(model, k, v))
        for key in left_out:
            del fields[key]
        return fields, left_out

    def each(self, entry: Entry, values: Mapping[str, Any], first: Path | None = None,
             columns: Mapping[str, str] | None = None,
             origin: Location | None = None) -> Iterator[Made]:
        """The task, or with `models:` one task per model, each built as if alone."""
        models = compare.names(values)
        if not models:
            yield self(entry, values, first, columns, origin)
            return
        base: str | None = None  # one id per source, then one suffix per model
        for model in models:
            made = self(entry, {**values, "model": model}, first, columns, origin, base)
            if made.task is None:
                yield made
                continue
            base = base or made.task.id
            task = dataclasses.replace(made.task, id=compare.task_id(base, model))
            yield dataclasses.replace(made, task=task)

    def __call__(self, entry: Entry, values: Mapping[str, Any], first: Path | None = None,
                 columns: Mapping[str, str] | None = None,
                 origin: Location | None = None, known_id: str | None = None) -> Made:
        root = self.root
        more = values.get("images")  # none for most glob entries: no generator then
        images = ((first,) if first else ()) + (tuple(resolve(root, s) for s in as_list(more))
                                                if more is not None else ())
        mask = resolve(root, str(values["mask"])) if values.get("mask") else None
        rel = self.relative(images[0])
        folder, _, name = rel.rpartition("/")
        placeholders = {**(columns or {}), "dir": folder or ".", "stem": _stem(name)}
        problems: tuple[Problem, ...] = ()
        given = values.get("id")
        if known_id is not None:
            task_id = known_id
        elif given is None:
            task_id = self.ids.derive(rel)
        elif entry.kind == "task":
            task_id = str(given)
        else:  # one id per expanded task: filled from the row and the first input
            task_id, empty = csvsource.fill(str(given), placeholders)
            problems = tuple(Problem(origin or entry.at("id"), entry.name("id"),
                                     f"{{{col}}} is empty here, and the id needs it")
                             for col in empty)
        fields, left_out = self.fields(entry, values)
        route = self.route(str(fields["model"]))
        placeholders = {"model": str(fields["model"]), **placeholders}
        prepare = prepared.parse(values["prepare"]) if "prepare" in values else None
        task = Task(id=task_id, images=images, prompt=str(values.get("prompt") or ""),
                    where=entry.where, root=root, mask=mask, fields=fields,
                    output=str(values.get("output") or DEFAULT_OUTPUT),
                    placeholders=placeholders, route=route, left_out=left_out,
                    prepare=prepare if isinstance(prepare, Prepare) else None)
        return Made(entry, task, problems, origin, first is not None)


def _stem(name: str) -> str:
    """Path(name).stem without building a Path: the name up to its last dot, unless that
    dot starts or ends it (pathlib's rule)."""
    dot = name.rfind(".")
    return name[:dot] if 0 < dot < len(name) - 1 else name


def _glob_tasks(build: _Builder, entry: Entry) -> Iterator[Made]:
    patterns = as_list(entry.values["glob"])
    outputs = globsource.outputs_pattern(str(entry.values.get("output") or DEFAULT_OUTPUT))
    found = False
    for path in globsource.matches_any(build.root, patterns, as_list(entry.values.get("exclude"))):
        if build.ours is not None and build.ours(path):
            continue  # written (or being written) by imgedit: the ledger says so
        if globsource.is_earlier_output(path, build.relative(path), outputs):
            continue  # an earlier run's result, not a new input
        found = True
        yield from build.each(entry, entry.values, first=path)
    if not found:
        # A nightly `incoming/*.jpg` on a quiet night: nothing to do is not an error.
        shown = ", ".join(map(repr, patterns))
        warning = Problem(entry.at("glob"), entry.name("glob"),
                          f"{shown} matches no files under {build.root}: nothing to do here")
        yield Made(entry, None, warning=warning)


def os_reason(exc: OSError, path: Path) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"file not found: {path}"
    if isinstance(exc, IsADirectoryError):
        return f"{path} is a folder, not a file"
    return f"cannot read {path}: {exc.strerror or exc}"


def _csv_tasks(build: _Builder, entry: Entry) -> Iterator[Made]:
    path = resolve(build.root, str(entry.values["csv"]))
    try:
        yield from _csv_rows(build, entry, path)
    except csvsource.CsvError as exc:
        problem = Problem(Location(path, exc.line), entry.name("csv"), exc.message)
        yield Made(entry, None, (problem,))
    except OSError as exc:
        problem = Problem(entry.at("csv"), entry.name("csv"), os_reason(exc, path))
        yield Made(entry, None, (problem,))


def _csv_rows(build: _Builder, entry: Entry, path: Path) -> Iterator[Made]:
    missing = _missing_columns(entry, path, csvsource.header(path))
    if missing:  # every row would fail the same way: say it once, at the header
        yield Made(entry, None, tuple(missing))
        return
    for row in csvsource.rows(path):
        origin = Location(path, row.line)
        values, problems = _fill_row(entry, row, origin)
        if problems:
            yield Made(entry, None, tuple(problems), origin)
        else:
            yield from build.each(entry, values, columns=row.values, origin=origin)


def _missing_columns(entry: Entry, path: Path, columns: list[str]) -> list[Problem]:
    problems = []
    for key in (*CSV_FILLED, "id"):
        allowed = {*columns, "dir", "stem"} if key == "id" else set(columns)
        for template in as_list(entry.values.get(key)):
            try:
                names = csvsource.placeholders(template)
            except ValueError as exc:
                problems.append(Problem(entry.at(key), entry.name(key), f"{exc}: write a "
                                        "literal brace as {{ or }}"))
                continue
            problems += [Problem(Location(path, 1), entry.name(key), f"uses {{{name}}} but the "
                                 f"CSV has no column {name!r} (columns: {', '.join(columns)})")
                         for name in names if name not in allowed]
    return problems


def _fill_row(entry: Entry, row: csvsource.Row,
              origin: Location) -> tuple[dict[str, Any], list[Problem]]:
    values = dict(entry.values)
    problems = []
    if row.extra:
        problems.append(Problem(origin, entry.name("csv"), f"{row.extra} more cell(s) than "
                                "the header names: quote values that contain commas"))
    for key in CSV_FILLED:
        raw = values.get(key)
        if not any(map(has_placeholders, as_list(raw))):
            continue
        filled = []
        for template in as_list(raw):
            try:
                text, empty = csvsource.fill(template, row.values)
            except ValueError as exc:
                problems.append(Problem(origin, entry.name(key), str(exc)))
                continue
            filled.append(text)
            problems += [Problem(origin, entry.name(key), f"column {col!r} is empty in this "
                                 f"row, and {key} uses {{{col}}}: fill the cell") for col in empty]
        value: Any = filled if isinstance(raw, list) else filled[0]
        if key in INTS and isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        wrong = None if problems else check_value(key, value)
        if wrong:
            problems.append(Problem(origin, entry.name(key), f"{wrong} (filled from the CSV)"))
        values[key] = value
    return values, problems
