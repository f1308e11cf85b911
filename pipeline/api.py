"""imgedit from Python (Airflow, Dagster, a notebook): the CLI's runs, checks and counts.

    from pipeline import api

    summary = api.run("jobs/demo.yaml", concurrency=4)
    if not summary.ok:
        print(summary.reprocess)

`run` and `await run_async` take the options `imgedit run` takes (as keyword
arguments), use the same ledger and write the same outputs, and return the
summary `imgedit run --json` prints, as a frozen `Summary`. `validate` and
`status` likewise. Nothing is printed and the process never exits: bad input
raises `ManifestError` / `ConfigError` / `InputError`, a held lock `LockHeld`,
an aborted run `Aborted` (a `RunAborted` carrying the summary). A run whose
tasks failed is not an error: it returns with `summary.ok` False. Signals are
left to the caller; logs go through the standard `logging` module
(logger names `imgedit*`), configured by the caller, if at all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from pipeline.errors import (
    ConfigError,
    ImgeditError,
    InputError,
    LockHeld,
    ManifestError,
    Problem,
    RunAborted,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "Aborted", "ConfigError", "Failure", "ImgeditError", "InputError", "LockHeld",
    "ManifestError", "Problem", "RunAborted", "Status", "StatusFailure", "Summary",
    "Validation", "run", "run_async", "status", "validate",
]

PathLike = str | os.PathLike[str]


class Options(TypedDict, total=False):
    """`imgedit run`'s options, as keywords. Unset ones come from the manifest's `limits`,
    then config/defaults.yaml, as on the command line."""

    config: PathLike  # folder with your own providers/models/defaults (IMGEDIT_CONFIG)
    provider: str
    base_url: str
    ledger: PathLike
    concurrency: int
    rate: str  # "30/min", "2/s", "unlimited"
    retries: int
    timeout: float  # seconds per request
    max_cost: float
    limit: int
    only: Iterable[str]  # task ids
    retry_failed: bool
    only_failed: bool
    force: bool
    retry_unknown: bool  # False = the CLI's --no-retry-unknown


@dataclass(frozen=True)
class Failure:
    id: str
    reason: str


@dataclass(frozen=True)
class Summary:
    """What a run came to: `imgedit run --json`'s object, typed."""

    manifest: Path
    provider: str
    endpoint: str  # the host requests went to, or "the in-process simulator"
    simulated: bool  # a rehearsal: `spent` is what it would have cost
    exit_code: int  # as the CLI's: 0 all done, 1 some failed or held
    tasks: int
    plan: Mapping[str, int]  # tasks by category: new, changed, done, retry, failed, unknown
    sent: int
    succeeded: int
    failed: int
    unknown: int
    skipped: int
    left_out: int  # not picked by `only` / `limit`
    not_started: int
    held: int
    requests: int
    retries: Mapping[str, int]
    possible_double_charges: int
    spent: float
    estimate: float
    elapsed_s: float
    tasks_per_s: float
    stopped: str | None
    failures: tuple[Failure, ...]  # the first 20
    outputs: tuple[Path, ...]  # the first 20
    reprocess: str | None  # the command that sends the failures again
    ledger: Path
    warnings: tuple[str, ...]
    notes: tuple[str, ...]  # a model's route switched, or a model stopped, during the run
    # Batch mode's part (submitted, collected, spent, saved, waiting), when it played one.
    batch: Mapping[str, Any] | None = None
    # Keys of the CLI's summary this version does not name yet: kept, never dropped.
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Summary:
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in names}
        values.update(manifest=Path(data["manifest"]), ledger=Path(data["ledger"]),
                      failures=tuple(Failure(f["id"], f["reason"]) for f in data["failures"]),
                      outputs=tuple(Path(p) for p in data["outputs"]),
                      warnings=tuple(data["warnings"]), notes=tuple(data.get("notes", ())))
        return cls(**values, extra={k: v for k, v in data.items() if k not in names})


@dataclass(frozen=True)
class Validation:
    """What `imgedit validate --json` prints: the plan, nothing sent."""

    manifest: Path
    endpoint: str
    simulated: bool
    tasks: int
    plan: Mapping[str, int]
    to_send: int
    left_out: int
    estimate: float  # USD, from config/models.yaml prices
    warnings: tuple[str, ...]
    defaults_left_out: tuple[str, ...]  # per model: fields of `defaults` it does not take
    batch_prices: bool = False  # batch mode on: the estimate counts batch prices


@dataclass(frozen=True)
class StatusFailure:
    id: str
    state: str  # failed or unknown
    terminal: bool
    reason: str | None
    attempts: int
    error: str | None


@dataclass(frozen=True)
class Status:
    """What `imgedit status --json` prints."""

    manifest: Path
    counts: Mapping[str, int]  # by state; never-run tasks count as pending
    never_run: int
    spent: float
    simulated: bool
    failures: tuple[StatusFailure, ...]


class Aborted(RunAborted):
    """The gateway refused the whole run (bad key, no quota, no such model): the CLI's exit 3.
    Finished work is kept; `summary` says what was done before."""

    def __init__(self, message: str, summary: Summary):
        super().__init__(message)
        self.summary = summary


def _options(manifest: PathLike, *, dry_run: bool = False, config: PathLike | None = None,
             provider: str | None = None, base_url: str | None = None,
             ledger: PathLike | None = None, concurrency: int | None = None,
             rate: str | None = None, retries: int | None = None, timeout: float | None = None,
             max_cost: float | None = None,
             limit: int | None = None, only: Iterable[str] = (), retry_failed: bool = False,
             only_failed: bool = False, force: bool = False,
             retry_unknown: bool = True) -> Any:
    """The same RunOptions the CLI builds from its flags."""
    from pipeline.ledger.plan import Selection
    from pipeline.run import runner

    flags = {"concurrency": concurrency, "rate": rate, "retries": retries, "timeout": timeout,
             "max_cost": max_cost}
    if not retry_unknown:
        flags["retry_unknown"] = False
    if isinstance(only, str):
        only = [only]
    selection = Selection(only=frozenset(only), only_failed=only_failed,
                          retry_failed=retry_failed or only_failed, force=force,
                          retry_unknown=retry_unknown, limit=limit)
    return runner.RunOptions(
        manifest=Path(manifest), config=None if config is None else os.fspath(config),
        provider=provider, base_url=base_url, ledger=None if ledger is None else Path(ledger),
        flags={k: v for k, v in flags.items() if v is not None}, selection=selection,
        dry_run=dry_run, quiet=True, signals=False)


def _summary(outcome: Any) -> Summary:
    summary = Summary.from_dict(outcome.summary)
    if outcome.code == RunAborted.exit_code:
        raise Aborted(f"run aborted: {outcome.fatal}", summary)
    return summary


def run(manifest: PathLike, **options: Unpack[Options]) -> Summary:
    """Run `manifest` as `imgedit run` does, with its options as keywords (`concurrency=8`,
    `only=["id"]`, `retry_unknown=False`...). Not inside a running event loop: use run_async."""
    from pipeline.run import runner

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _summary(runner.execute(_options(manifest, **options)))
    raise InputError("api.run was called inside a running event loop (a notebook, an async "
                     "task): use `await api.run_async(...)` there")


async def run_async(manifest: PathLike, **options: Unpack[Options]) -> Summary:
    """`run`, awaited in the caller's event loop (asyncio or trio, through anyio). The checks
    before the first request (files, ledger) block the loop while they run."""
    from pipeline.run import runner

    return _summary(await runner.execute_async(_options(manifest, **options)))


def validate(manifest: PathLike, **options: Unpack[Options]) -> Validation:
    """Check everything and plan, as `imgedit validate`; raises ManifestError with every
    problem (`.problems`, each with file, line, column, field and message)."""
    from pipeline.run import runner

    planned = runner.check(_options(manifest, dry_run=True, **options)).summary()
    return Validation(**{**planned, "manifest": Path(planned["manifest"]),
                         "warnings": tuple(planned["warnings"]),
                         "defaults_left_out": tuple(planned["defaults_left_out"])})


def status(manifest: PathLike, *, ledger: PathLike | None = None,
           config: PathLike | None = None) -> Status:
    """Counts by state, money and failures, as `imgedit status`. Read-only."""
    from pipeline.views import status as ledger_status

    report = ledger_status.status(Path(manifest), None if ledger is None else Path(ledger),
                                  None if config is None else os.fspath(config))
    return Status(manifest=Path(report["manifest"]), counts=report["counts"],
                  never_run=report["never_run"], spent=report["spent"],
                  simulated=report["simulated"],
                  failures=tuple(StatusFailure(**f) for f in report["failures"]))
