"""The check pass: every task of a manifest, checked in one stream before anything is sent.

Owns what needs the disk and the model table: inputs exist, are regular files
and whole images the API takes (inputs.py, once per unchanged file); model limits (through
models.py); ids are unique; outputs neither collide, nor land on an input, nor
leave the manifest's folder tree unless `allow_outside: true`.

It holds ids and hashed input/output paths seen, never the tasks themselves,
and it never writes a file or sends a request.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config.models import FileFacts, Models, probe
from pipeline.errors import ManifestError, Problem
from pipeline.manifest import prepared
from pipeline.manifest.entries import Made, os_reason
from pipeline.manifest.inputs import InputCache, check_input, preparable
from pipeline.manifest.problems import Problems
from pipeline.task import EXT_MARK, IMAGE_FORMATS, Location, Task

if TYPE_CHECKING:
    from pipeline.manifest.load import Manifest

_EXTS = tuple(IMAGE_FORMATS)  # the gateway decides the format: every one must be safe


@dataclass(frozen=True)
class Checked:
    """One step of the pass: a task (None when none could be made) and what is wrong."""

    task: Task | None
    problems: tuple[Problem, ...]
    origin: Location | None = None  # the csv row the task came from
    warning: Problem | None = None  # not wrong, but worth saying (a glob that found nothing)
    # Width and height of its inputs, as their full check found them: the estimate's.
    dimensions: Mapping[Path, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class ValidationReport:
    tasks: int
    images: int  # input files over all tasks (a file used twice counts twice)
    outputs: int  # images asked for: the sum of n
    cost: float | None  # USD estimate from models.yaml prices; None: not priced (a run's)
    by_model: Mapping[str, int]  # tasks per model
    cost_by_model: Mapping[str, float]
    warnings: tuple[Problem, ...] = ()
    # model -> (field of `defaults` its tasks left out, how many tasks): "Defaults are defaults"
    left_out: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def left_out_lines(self) -> list[str]:
        def counted(key: str, n: int) -> str:
            return f"{key} in {n} task{'s' if n != 1 else ''}"

        return [f"defaults left out for {model} (it does not take them): "
                + ", ".join(counted(k, n) for k, n in sorted(fields.items()))
                for model, fields in sorted(self.left_out.items())]


def validate(manifest: Manifest, models: Models,
             known: InputCache | None = None) -> Iterator[Checked]:
    """Check every task in manifest order, one at a time; problems are yielded, never raised.

    `known` (the ledger) remembers what each input's full check found, so an
    unchanged catalog is stat()ed, not re-opened: asked a chunk of tasks at a time.
    """
    files = _Files(known=known)
    seen = _Seen(manifest)
    made_so_far = manifest.expand()
    while chunk := list(itertools.islice(made_so_far, LOOK_AHEAD)):
        if known is not None:
            known.look_up(path for made in chunk if made.task is not None
                          for _, path in _inputs(made, made.task))
        for made in chunk:
            yield _checked(made, manifest, models, files, seen)


LOOK_AHEAD = 500  # tasks whose inputs the ledger is asked about in one query


def _checked(made: Made, manifest: Manifest, models: Models, files: _Files,
             seen: _Seen) -> Checked:
    task = made.task
    if task is None:
        return Checked(None, made.problems, made.origin, made.warning)
    problems = list(made.problems)
    facts: dict[Path, FileFacts] = {}
    dimensions: dict[Path, tuple[int, int]] = {}
    for key, path in _inputs(made, task):
        found = files.get(path)
        if key != "glob" and manifest.ours is not None and manifest.ours(path):
            found = (f"{path} is a result imgedit wrote for this manifest, not an input:"
                     " copy it elsewhere to edit it again")
        if isinstance(found, str) and task.prepare is not None and preparable(found):
            found = probe(path)  # CMYK, 16-bit, a wrong name: what prepare makes counts
        if isinstance(found, str):
            problems.append(Problem(made.entry.at(key), made.entry.name(key), found))
            continue
        if found.dimensions is not None:
            dimensions[path] = found.dimensions
        if task.prepare is not None:  # the model gets the prepared file, not this one
            facts[path] = prepared.facts(found, task.prepare, mask=key == "mask")
        else:
            facts[path] = found
    for name, message in models.check(task, facts):
        key = name.split("[")[0]
        problems.append(Problem(made.entry.at(key), made.entry.name(name), message))
    problems += seen.add(made, task)
    return Checked(task, tuple(problems), made.origin, dimensions=dimensions)


def check_all(
    manifest: Manifest,
    models: Models,
    *,
    max_problems: int = 1000,
    on_task: Callable[[Task], None] | None = None,
    known: InputCache | None = None,
) -> ValidationReport:
    """One streaming pass over every task: counts and a cost estimate, or every problem.

    Raises ManifestError with all problems found (identical ones folded into one,
    naming the first task and how many more; at most `max_problems` shown).
    `on_task` sees each good task as it passes, e.g. to print a plan.
    """
    checking = Preflight(manifest, models, max_problems=max_problems, known=known)
    for task in checking:
        if on_task is not None:
            on_task(task)
    assert checking.report is not None
    return checking.report


class Preflight:
    """check_all as an iterator of the good tasks, so a run plans each as it passes and
    expands its manifest once, not twice. When the pass ends, every problem is raised at
    once (ManifestError, as check_all), before the caller acts on its plan; else `report`."""

    def __init__(self, manifest: Manifest, models: Models, *, max_problems: int = 1000,
                 known: InputCache | None = None, price: bool = True):
        self.manifest, self.models, self.known = manifest, models, known
        self.max_problems = max_problems
        # False: the report's cost stays None. A run prices only what its plan sends, and
        # pricing each of 100k done tasks here cost 4% of a re-run.
        self.price = price
        self.report: ValidationReport | None = None

    def __iter__(self) -> Iterator[Task]:
        manifest, models = self.manifest, self.models
        found = Problems(self.max_problems)
        by_model: Counter[str] = Counter()
        cost_by_model: dict[str, float] = {}
        left_out: dict[str, Counter[str]] = {}
        images = outputs = 0
        warnings: list[Problem] = []
        for problem in manifest.problems:
            found.add(problem, "")
        for checked in validate(manifest, models, self.known):
            task = checked.task
            if checked.warning is not None:
                warnings.append(checked.warning)
            for problem in checked.problems:
                found.add(problem, _label(task, checked.origin))
            if task is None or checked.problems:
                continue
            by_model[task.model] += 1
            for key in task.left_out:
                left_out.setdefault(task.model, Counter())[key] += 1
            if self.price:
                cost = models.estimate(task, checked.dimensions.get)  # the check's sizes
                cost_by_model[task.model] = cost_by_model.get(task.model, 0.0) + cost
            images += len(task.images)
            outputs += task.n
            yield task
        if found:
            raise ManifestError(found.result(manifest.path))
        self.report = ValidationReport(
            tasks=sum(by_model.values()), images=images, outputs=outputs,
            cost=sum(cost_by_model.values()) if self.price else None, by_model=dict(by_model),
            cost_by_model=cost_by_model, warnings=tuple(warnings),
            left_out={m: dict(c) for m, c in left_out.items()})


def _label(task: Task | None, origin: Location | None) -> str:
    if task is None:
        return ""
    return f"task {task.id!r}, {origin}" if origin else f"task {task.id!r}"


def _inputs(made: Made, task: Task) -> Iterator[tuple[str, Path]]:
    for i, path in enumerate(task.images):
        yield ("glob" if made.matched and i == 0 else "images"), path
    if task.mask is not None:
        yield "mask", task.mask


class _Files:
    """Probes each input file once; recent answers are kept for files many tasks share."""

    def __init__(self, keep: int = 4096, known: InputCache | None = None):
        self.keep = keep
        self.known = known
        # Keyed by the path's text: a Path hashes its parts anew each time it is asked.
        self.recent: OrderedDict[str, FileFacts | str] = OrderedDict()

    def get(self, path: Path) -> FileFacts | str:
        """What the file is, or a message saying why it cannot be used."""
        name = str(path)
        answer = self.recent.get(name)
        if answer is not None:
            self.recent.move_to_end(name)
            return answer
        try:
            answer = check_input(path, self.known)
        except OSError as exc:
            answer = os_reason(exc, path)
        self.recent[name] = answer
        if len(self.recent) > self.keep:
            self.recent.popitem(last=False)
        return answer


# A 64-bit int per path instead of the path itself (36 bytes, not ~100): 100k tasks
# stay small; a chance collision (about 1 in 10^8 at 100k tasks) would only report a
# clash that is not there, never hide one. Python's own string hash (64-bit SipHash,
# salted per process) will do: the keys live for one pass, and it costs a tenth of
# a blake2b, six times a task.
_key = hash


class _Seen:
    """Ids and paths seen so far in the pass, to catch duplicates and collisions.

    An output is remembered by its path without the image extension: that is its
    sidecar's name too, so `x.png` and `x.jpg` from two tasks collide (one `x.json`),
    and one key per output stands for all three formats the gateway may return.
    """

    def __init__(self, manifest: Manifest):
        self.allow_outside = manifest.allow_outside
        self.dirs: dict[str, str] = {}
        self.root = self._real_dir(str(manifest.root))  # ends in a separator
        self.ids: dict[str, Location] = {}
        self.inputs: dict[int, str] = {}  # path key -> id of the first task reading it
        # The text after the last dot of every input so far: an output path ending in
        # another (`.png` where the inputs are `.jpg`) can be no input, so is not looked up.
        self.tails: set[str] = set()
        # stem key -> the writer's id (any image format), or (id, its one extension)
        self.outputs: dict[int, str | tuple[str, str]] = {}

    def add(self, made: Made, task: Task) -> list[Problem]:
        problems = []
        first = self.ids.get(task.id)
        if first is not None:
            problems.append(Problem(made.entry.at("id"), made.entry.name("id"), f"duplicate id "
                                    f"{task.id!r}: also at {first}; give each task its own id"))
        else:
            self.ids[task.id] = made.origin or task.where
        entry = made.entry
        inputs = "glob" if made.matched else "images"
        own = {self._canonical(str(p)): p for p in _input_files(task)}
        if found := self._inputs(task, own):
            problems += [Problem(entry.at(inputs), entry.name(inputs), m) for m in found]
        if found := self._outputs(task, own):
            problems += [Problem(entry.at("output"), entry.name("output"), m) for m in found]
        return problems

    def _inputs(self, task: Task, own: Mapping[str, Path]) -> list[str]:
        for canonical in own:
            self.inputs.setdefault(_key(canonical), task.id)
            self.tails.add(canonical.rpartition(".")[2])
        for canonical, path in own.items():
            stem, ext = os.path.splitext(canonical)
            writer = self.outputs.get(_key(stem))
            if writer is None:
                continue
            writer_id, writes = (writer, _SUFFIXES) if isinstance(writer, str) else writer
            if writer_id != task.id and ext in writes:
                return [f"task {writer_id!r} writes its output to {path}, an input here: "
                        "change that task's output template"]
        return []

    def _outputs(self, task: Task, own: Mapping[str, Path]) -> list[str]:
        try:
            renders = _output_stems(task)
        except (KeyError, ValueError, IndexError) as exc:
            return [_template_problem(task, exc)]
        found: dict[str, str] = {}  # one message per kind of trouble
        for stem, ext in renders:
            canonical_stem = self._canonical(stem)
            if not self.allow_outside and not canonical_stem.startswith(self.root):
                root = self.root.rstrip(os.sep) or os.sep
                found.setdefault("outside", f"{stem}{ext or _SUFFIXES[0]} is outside the "
                                 f"manifest's folder {root}: change the output template, or "
                                 "set allow_outside: true")
            for suffix in (_SUFFIXES if ext is None else (ext,)):
                # A suffix is empty, or a dot and no other (splitext's): an input it
                # could be ends in the same text after its last dot.
                if not suffix or suffix[1:] in self.tails:
                    self._check_file(task, stem + suffix, canonical_stem + suffix, own, found)
            mine: str | tuple[str, str] = task.id if ext is None else (task.id, sys.intern(ext))
            writer = self.outputs.setdefault(_key(canonical_stem), mine)
            writer_id = writer if isinstance(writer, str) else writer[0]
            if writer_id != task.id:
                found.setdefault("clash", f"{stem}{ext or _SUFFIXES[0]}: task {writer_id!r} (at "
                                 f"{self.ids.get(writer_id)}) writes to the same name, so one "
                                 "would overwrite the other's image or .json sidecar: give "
                                 "them different outputs")
        return list(found.values())

    def _check_file(self, task: Task, path: str, canonical: str, own: Mapping[str, Path],
                    found: dict[str, str]) -> None:
        if canonical in own:
            found.setdefault("own", f"{path} would overwrite this task's own input: add "
                             "something like '.edited' to the output template")
            return
        reader = self.inputs.get(_key(canonical), task.id)
        if reader != task.id:
            found.setdefault("input", f"{path} would overwrite an input of task {reader!r}: "
                             "change the output template")

    def _canonical(self, path: str) -> str:
        """The path with its folder's links resolved, so two spellings of one file match."""
        folder, _, name = path.rpartition(os.sep)  # os.path.split's answer, but cheaper:
        if not folder or folder.endswith(os.sep):  # except at the top, or after "//"
            folder, name = os.path.split(path)
        return self._real_dir(folder) + name

    def _real_dir(self, folder: str) -> str:
        """The folder's real path, ending in a separator."""
        real = self.dirs.get(folder)
        if real is None:
            if len(self.dirs) > 10_000:  # bounded: many folders must not grow memory
                self.dirs.clear()
            real = self.dirs[folder] = os.path.join(os.path.realpath(folder), "")
        return real


def _input_files(task: Task) -> tuple[Path, ...]:
    return (*task.images, task.mask) if task.mask else task.images


_SUFFIXES = tuple(f".{ext}" for ext in _EXTS)


def _output_stems(task: Task) -> dict[tuple[str, str | None], None]:
    """(path without extension, extension) per output; extension None = any image format.

    Paths are normalised (`out/../x.png` is the file it is). A dict keeps them in order.
    """
    stems: dict[tuple[str, str | None], None] = {}
    for index in range(task.n):
        shape = task.output_shape(index)
        if shape is None:  # a format spec: render each
            names = [_normal(task.output_name(index, ext)) for ext in _EXTS]
        else:
            shape = _normal(shape)
            if shape.endswith("." + EXT_MARK) and shape.count(EXT_MARK) == 1:
                stems[(shape[: -len(EXT_MARK) - 1], None)] = None
                continue
            names = [shape.replace(EXT_MARK, ext) for ext in _EXTS]
        for name in names:
            stems[os.path.splitext(name)] = None
    return stems


def _normal(path: str) -> str:
    """os.path.normpath(path), without its work for the usual output: an absolute path
    with nothing to fold (no `//`, no `.` or `..` part, no separator at the end)."""
    if (os.sep == "/" and path[:1] == "/" and "//" not in path and "/." not in path
            and path[-1] != "/"):
        return path
    return os.path.normpath(path)


def _template_problem(task: Task, exc: Exception) -> str:
    known = ", ".join("{" + k + "}" for k in sorted({*task.placeholders, "id", "index", "ext"}))
    if isinstance(exc, KeyError):
        return (f"output template {task.output!r} uses {{{exc.args[0]}}}, which is not known "
                f"here; use {known}")
    return f"output template {task.output!r} cannot be filled ({exc}): known are {known}"
