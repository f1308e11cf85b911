"""The manifest: a YAML job file (version 1) and the Tasks it stands for, streamed.

Owns the top-level schema (version, provider, defaults, limits, tasks,
allow_outside) and `load`, which reads the file with line numbers so every
Problem names `manifest.yaml:LINE` and a field such as `tasks[2].prompt`.
Entries and their expansion live in entries.py; the streaming check pass
(files, model limits, ids, outputs) in preflight.py, re-exported here.

It never sends requests, never writes files and never holds every Task at once:
`Manifest.tasks()` is a generator, run again for each pass.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config.models import Models
from pipeline.config.routes import Routing
from pipeline.config.settings import parse_rate
from pipeline.errors import ManifestError, Problem
from pipeline.manifest import compare, entries, yamlpos
from pipeline.manifest.entries import Entry, Made
from pipeline.manifest.values import check_value, did_you_mean, has_placeholders
from pipeline.manifest.yamlpos import LineMap
from pipeline.task import REQUEST_FIELDS, Location, Task

VERSION = 1
TOP_KEYS = ("version", "provider", "defaults", "limits", "tasks", "allow_outside")
DEFAULT_KEYS = (*REQUEST_FIELDS, "prompt", "output", "models", "prepare")
LIMIT_KEYS = ("concurrency", "rate", "retries", "timeout", "batch")


@dataclass(frozen=True)
class Manifest:
    path: Path  # absolute path of the manifest file
    root: Path  # its folder
    version: int
    provider: str | None  # None when the manifest does not say
    defaults: Mapping[str, Any]  # request fields, prompt and output
    limits: Mapping[str, Any]  # concurrency, rate, retries, timeout (all optional)
    allow_outside: bool
    entries: tuple[Entry, ...] = ()
    default_model: str = "gpt-image-1"  # when neither a task nor defaults name a model
    problems: tuple[Problem, ...] = ()  # top-level problems, reported again by check_all
    # Whether a file is one imgedit wrote (an output, a sidecar, a temp file): never an
    # input. The run sets it from the ledger; without one, only temp files are known.
    ours: Callable[[Path], bool] | None = None
    # What each model takes, so a default it refuses is left out of its tasks (None: keep all).
    models: Models | None = None
    routing: Routing | None = None  # each model's route on the run's provider

    def tasks(self) -> Iterator[Task]:
        """Every task in manifest order, built one at a time.

        Raises ManifestError at the first problem: run check_all first to see them all.
        """
        for made in self.expand():
            if made.problems:
                raise ManifestError(list(made.problems))
            if made.task is not None:  # None with no problem: a warning, not a task
                yield made.task

    def expand(self) -> Iterator[Made]:
        """Tasks, and the problems that kept some from being made, in manifest order."""
        routing = self.routing
        if routing is None and self.models is not None:
            routing = Routing(self.models.route_plans())
        return entries.expand(self.entries, self.root, self.default_model, self.ours,
                              models=self.models, routing=routing)


def load(path: Path, models: Models | None = None, *, default_model: str = "gpt-image-1",
         defer: bool = False) -> Manifest:
    """Read a manifest and check its structure; files and model limits wait for check_all.

    Raises ManifestError with every problem found in the top-level structure (YAML
    syntax, version, unknown keys, wrong types, keys written twice), plus what is
    wrong in the entries themselves, each naming file:line and field. `models` (model
    limits are checked per task, by check_all) decides which defaults each task takes:
    with them, a default a task's model refuses is left out of that
    task. With `defer`, such problems wait in `problems` for
    check_all to report beside every file problem, unless the task list is unusable.
    """
    path = Path(os.path.abspath(path))
    data, problems = _read(path)
    top = _check_top(path, data)
    defaults, default_lines, found = _section(path, data, "defaults", DEFAULT_KEYS)
    top += found
    if compare.both_given(defaults):
        top.append(Problem(Location(path, default_lines["models"]), "defaults.models",
                           "give model or models, not both"))
    limits, _, found = _section(path, data, "limits", LIMIT_KEYS)
    top += found
    items = data.get("tasks")
    listed = items if isinstance(items, yamlpos.LineList) else yamlpos.LineList()
    parsed = tuple(
        entries.parse_entry(i, raw, Location(path, listed.line_of(i)), defaults, default_lines)
        for i, raw in enumerate(listed)
    )
    problems += top
    if problems and (not listed or not defer):
        raise ManifestError(problems + [p for e in parsed for p in e.problems])
    # With `defer`, check_all reports these with every file and entry problem, so one
    # typo in `defaults` does not hide a missing file further down.
    return Manifest(
        path=path, root=path.parent, version=VERSION,
        provider=data.get("provider"), defaults=defaults, limits=limits,
        allow_outside=bool(data.get("allow_outside", False)),
        entries=parsed, default_model=default_model, problems=tuple(problems),
        models=models if isinstance(models, Models) else None,
    )


def _read(path: Path) -> tuple[LineMap, list[Problem]]:
    """The parsed top mapping and the keys written twice; raises when there is nothing to read."""
    whole = Location(path)
    try:
        data, duplicates = yamlpos.load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ManifestError([Problem(whole, "manifest", entries.os_reason(exc, path))]) from exc
    except UnicodeDecodeError as exc:
        message = f"not UTF-8 text ({exc.reason}): save it as UTF-8"
        raise ManifestError([Problem(whole, "manifest", message)]) from exc
    except yamlpos.YamlSyntaxError as exc:
        where = Location(path, exc.line, exc.column)
        problem = Problem(where, "yaml", f"not valid YAML: {exc.message}")
        raise ManifestError([problem]) from exc
    if not isinstance(data, LineMap):
        message = "expected a mapping with version, defaults and tasks at the top"
        raise ManifestError([Problem(Location(path, 1), "manifest", message)])
    problems = [Problem(Location(path, d.line), d.key, f"written twice (first at line "
                        f"{d.first_line}); YAML keeps only the last: remove one")
                for d in duplicates]
    return data, problems


def _check_top(path: Path, data: LineMap) -> list[Problem]:
    def at(key: str) -> Location:
        return Location(path, data.line_of(key))

    problems = [Problem(at(str(k)), str(k), did_you_mean(k, TOP_KEYS))
                for k in data if k not in TOP_KEYS]
    version = data.get("version")
    if version is None:
        problems.append(Problem(Location(path, 1), "version", "missing: add `version: 1`"))
    elif version != VERSION or isinstance(version, bool):
        problems.append(Problem(at("version"), "version", f"{version!r} is not supported: "
                                "this imgedit reads version 1 manifests"))
    provider = data.get("provider")
    if provider is not None and not (isinstance(provider, str) and provider.strip()):
        problems.append(Problem(at("provider"), "provider", "expected a provider name"))
    if not isinstance(data.get("allow_outside", False), bool):
        problems.append(Problem(at("allow_outside"), "allow_outside", "expected true or false"))
    items = data.get("tasks")
    if items is None:
        problems.append(Problem(Location(path, 1), "tasks", "missing: list what to edit "
                                "under `tasks:`"))
    elif not isinstance(items, yamlpos.LineList):
        problems.append(Problem(at("tasks"), "tasks", "expected a list of entries (- images:)"))
    elif not items:
        problems.append(Problem(at("tasks"), "tasks", "the list is empty: nothing to do"))
    return problems


def _section(path: Path, data: LineMap, name: str,
             known: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, int], list[Problem]]:
    """A `defaults` or `limits` mapping: its valid values, their lines, and what is wrong."""
    raw = data.get(name)
    if raw is None:
        return {}, {}, []
    if not isinstance(raw, LineMap):
        return {}, {}, [Problem(Location(path, data.line_of(name)), name, "expected a mapping")]
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    problems = []
    check = _limit_problem if name == "limits" else _default_problem
    for key, value in raw.items():
        where, field = Location(path, raw.line_of(key)), f"{name}.{key}"
        wrong = did_you_mean(key, known) if key not in known else check(key, value)
        if wrong:
            problems.append(Problem(where, field, wrong))
        else:
            values[key], lines[key] = value, where.line
    return values, lines, problems


def _default_problem(key: str, value: Any) -> str | None:
    if has_placeholders(value):
        return None  # text for csv rows to fill: checked per entry and row
    return check_value(key, value)


def _limit_problem(key: str, value: Any) -> str | None:
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if key == "concurrency" and not (is_int and value >= 1):
        return f"{value!r} must be a whole number of at least 1"
    if key == "retries" and not (is_int and value >= 0):
        return f"{value!r} must be a whole number of at least 0"
    if key == "timeout" and not (isinstance(value, int | float) and not isinstance(value, bool)
                                 and value > 0):
        return f"{value!r} must be a number of seconds above 0"
    if key == "batch" and not isinstance(value, bool):
        return f"{value!r} must be true or false"
    if key == "rate" and str(value).lower() not in ("none", "unlimited", "0"):
        try:
            parse_rate(str(value))
        except ValueError as exc:
            return str(exc)
    return None
