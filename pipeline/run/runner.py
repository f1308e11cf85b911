"""`imgedit run`: wire a manifest, the config, the ledger and the scheduler into one run.

Order matters and is the contract: validate everything (exit 2, nothing
sent), take the lock (exit 75), plan against the ledger, check the budget,
then send. Signals stop launching, give in-flight requests a grace period,
then cancel. The key is handed to the client and to nothing else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import signal
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config.models import Models
from pipeline.config.routes import Routing
from pipeline.config.settings import (
    Provider,
    config_dir,
    config_file,
    load_provider,
    parse_rate,
    read_yaml,
)
from pipeline.config.settings import resolve_settings as _resolve
from pipeline.errors import BadResponse, ConfigError, InputError, RunAborted
from pipeline.ledger import store as ledger_mod
from pipeline.ledger.lock import RunLock
from pipeline.ledger.plan import Category, Found, Plan, Selection, select, walk
from pipeline.ledger.store import Ledger
from pipeline.manifest import load as manifest_mod
from pipeline.manifest.preflight import ValidationReport
from pipeline.run import batchmode, console, folders, planning, redo, spool
from pipeline.run.batchstart import batcher_for
from pipeline.run.planning import Job
from pipeline.run.pricing import pricer as _pricer
from pipeline.task import Task
from pipeline.views import summary
from pipeline.views.logs import event
from pipeline.views.tally import Tally

if TYPE_CHECKING:  # sending's modules are imported by _send: validate never loads aiohttp

    from pipeline.run.batch import Batcher
    from pipeline.run.scheduler import Stop

EXIT_OK, EXIT_FAILED = 0, 1
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


@dataclass(frozen=True)
class RunOptions:
    manifest: Path
    config: str | None = None
    provider: str | None = None
    base_url: str | None = None
    ledger: Path | None = None
    flags: dict[str, Any] = field(default_factory=dict)  # settings given on the command line
    selection: Selection = field(default_factory=Selection)
    dry_run: bool = False
    json: bool = False
    quiet: bool = False
    prompt_suffix: str | None = None  # --prompt-suffix, with --redo-rejected
    signals: bool = True  # watch SIGINT/SIGTERM (the CLI); a library call leaves them alone
    wait: bool = False  # --wait: poll until every provider batch has ended (batch mode)

    @property
    def repeat(self) -> tuple[str, ...]:
        """The flags a printed `imgedit run ... --only-failed` must carry to mean this run."""
        given = (("--provider", self.provider), ("--base-url", self.base_url),
                 ("--config", self.config), ("--ledger", self.ledger))
        return tuple(part for flag, value in given if value for part in (flag, str(value)))


@dataclass(frozen=True)
class Outcome:
    """What a run came to: its exit code and the summary `--json` prints."""

    code: int
    summary: dict[str, Any]
    fatal: Exception | None = None  # the gateway's answer that aborted the run (exit 3)


@dataclass(frozen=True)
class Checked:
    """What validate (or --dry-run) found: the plan, and warnings worth saying."""

    job: Job
    plan: Plan
    report: ValidationReport

    def summary(self) -> dict[str, Any]:
        """What `validate --json` prints."""
        provider = self.job.provider
        return summary.plan_dict(self.job.manifest.path, self.plan, _warnings(self.report),
                                 endpoint=summary.endpoint(provider.name, provider.base_url),
                                 simulated=simulated(provider),
                                 left_out=self.report.left_out_lines(),
                                 batch_prices=self.job.settings.batch)


def prepare(options: RunOptions) -> Job:
    """Load the manifest and the config; raises InputError (exit 2). Files and model
    limits are checked by `planning`, once the ledger's cache can vouch for unchanged files."""
    folder = config_dir(options.config)
    models = Models.load(config_file(folder, "models.yaml"))
    defaults = read_yaml(config_file(folder, "defaults.yaml"))
    manifest = manifest_mod.load(options.manifest, models, default_model=defaults["model"],
                                 defer=True)
    settings = _resolve(folder, manifest.limits, options.flags)
    if settings.rate:
        try:
            parse_rate(settings.rate)
        except ValueError as exc:
            raise ConfigError(f"--rate / limits.rate: {exc}") from exc
    name = options.provider or manifest.provider or defaults["provider"]
    provider = load_provider(folder, name, options.base_url)
    manifest = dataclasses.replace(manifest, routing=Routing(models.route_plans(),
                                                             provider.routes))
    ledger_path = options.ledger or ledger_mod.default_path(manifest.path)
    return Job(manifest, models, settings, provider, ledger_path)


def run(options: RunOptions, out: Callable[[str], None]) -> int:
    """The command line's run and validate: what happened, said; the exit code."""
    if options.dry_run:
        console.show_plan(check(options).summary(), as_json=options.json,
                          quiet=options.quiet, out=out)
        return EXIT_OK
    outcome = execute(options)
    console.show_summary(outcome.summary, outcome.code, outcome.fatal, as_json=options.json,
                         quiet=options.quiet, out=out)
    return outcome.code


def check(options: RunOptions) -> Checked:
    """validate / --dry-run: no lock, no writes; an existing ledger is only read."""
    job = prepare(options)
    with tempfile.TemporaryDirectory(prefix="imgedit-plan-") as scratch:
        path = job.ledger_path if job.ledger_path.exists() else Path(scratch, "plan.sqlite")
        with Ledger.open(path, recover=False) as ledger, _damaged(path):
            checking = planning.check(job, ledger)
            plan = planning.plan(job, ledger, options.selection, checking, found=Found.COUNT)
            report = planning.report(job, checking)
            folders.check(plan.room, clean=False)
    return Checked(job, plan, report)


def execute(options: RunOptions) -> Outcome:
    """A whole run, start to summary; raises InputError (2), LockHeld (75)."""
    with _planned(options) as (job, ledger, plan, warnings, batcher):
        if plan.to_send == 0 and not (batcher and batcher.wait and batcher.open_rows()):
            # A finished catalog: no second pass, no simulator, no session.
            return _conclude(job, ledger, options, Tally(), plan, None, warnings,
                             batcher.run_id if batcher else None, batcher=batcher)
        import anyio

        return anyio.run(_send, job, ledger, options, plan.to_send, warnings, batcher)


async def execute_async(options: RunOptions) -> Outcome:
    """The same, inside the caller's event loop (the checks before sending block it)."""
    with _planned(options) as (job, ledger, plan, warnings, batcher):
        if plan.to_send == 0 and not (batcher and batcher.wait and batcher.open_rows()):
            return _conclude(job, ledger, options, Tally(), plan, None, warnings,
                             batcher.run_id if batcher else None, batcher=batcher)
        return await _send(job, ledger, options, plan.to_send, warnings, batcher)


@contextlib.contextmanager
def _planned(options: RunOptions
             ) -> Iterator[tuple[Job, Ledger, Plan, tuple[str, ...], Batcher | None]]:
    """Validated, locked, planned and within budget, or an InputError before anything."""
    job = prepare(options)
    lock = RunLock(job.ledger_path, manifest=job.manifest.path)
    with lock, Ledger.open(job.ledger_path) as ledger, _damaged(job.ledger_path):
        spool.deliver(spool.folder(job.ledger_path), ledger)  # paid earlier, not yet written
        checking = planning.check(job, ledger, price=False)
        batcher = None
        if batchmode.touches_batches(job.settings, ledger, options.wait):
            planning.report(job, checking)  # every task checked before batches are collected
            batcher = batcher_for(job, ledger, options)  # collects what has ended
        plan = planning.plan(job, ledger, options.selection, checking)
        warnings = _warnings(planning.report(job, checking))
        folders.check(plan.room)
        max_cost = job.settings.max_cost
        if max_cost is not None and plan.estimate > max_cost:
            raise InputError(
                f"the estimated cost ${plan.estimate:.2f} is above --max-cost {max_cost:g}; "
                "raise the budget or narrow the run with --limit / --only")
        if plan.to_send and job.provider.api_key is None:
            names = dict.fromkeys(filter(None, (job.provider.api_key_env, "IMGEDIT_API_KEY")))
            raise ConfigError(f"no API key: set {' or '.join(names)} in the environment")
        yield job, ledger, plan, warnings, batcher


@contextlib.contextmanager
def _damaged(path: Path) -> Iterator[None]:
    """A damaged ledger page met mid-way is a message with what to do, not a traceback."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        raise InputError(ledger_mod.corrupt_message(path, exc)) from exc
    except BaseExceptionGroup as group:  # met by a worker, inside the task group
        found = group.subgroup(sqlite3.DatabaseError)
        if found is None:
            raise
        raise InputError(ledger_mod.corrupt_message(path, found.exceptions[0])) from group


def _warnings(report: ValidationReport) -> tuple[str, ...]:
    return tuple(str(w) for w in report.warnings)


def simulated(provider: Provider) -> bool:
    """A rehearsal: the in-process simulator, or the provider named for one."""
    return provider.simulator is not None or provider.name == "simulator"


@contextlib.asynccontextmanager
async def _gateway_url(provider: Provider) -> AsyncIterator[str]:
    if provider.base_url:
        yield provider.base_url
        return
    from pipeline.simulator.app import SimulatorOptions, running_simulator

    options = dict(provider.simulator or {})
    if provider.api_key is not None:  # the in-process relay accepts the run's own key
        options.setdefault("api_key", provider.api_key.reveal())
    async with running_simulator(SimulatorOptions.from_mapping(options)) as sim:
        yield sim.base_url


async def _send(job: Job, ledger: Ledger, options: RunOptions, to_send: int,
                warnings: tuple[str, ...], batcher: Batcher | None = None) -> Outcome:
    import aiohttp
    import anyio

    from pipeline.gateway.limits import Throttle
    from pipeline.run.board import Board
    from pipeline.run.prepare import Preparer, PreparingGateway, cache_folder
    from pipeline.run.scheduler import Scheduler
    from pipeline.run.signals import watch_signals as _watch_signals
    from pipeline.views import progress

    settings = job.settings
    tally = Tally(total=to_send, simulated=simulated(job.provider))
    plan = Plan()  # counted again as tasks stream, so the summary matches what was sent
    signalled: list[signal.Signals] = []
    throttle = Throttle(parse_rate(settings.rate) if settings.rate else None)
    run_id = batcher.run_id if batcher else ledger.start_run(
        job.manifest.path, {"flags": options.flags, "provider": job.provider.name})
    event(logging.INFO, "run started", run_id=run_id, manifest=str(job.manifest.path),
          provider=job.provider.name, to_send=to_send, concurrency=settings.concurrency,
          rate=settings.rate)
    endpoint = summary.endpoint(job.provider.name, job.provider.base_url)
    async with _gateway_url(job.provider) as base_url:
        provider = Provider(**{**job.provider.__dict__, "base_url": base_url})
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            preparer = Preparer(cache_folder(job.ledger_path), ledger, job.models)
            gateway = PreparingGateway(session, provider, settings.timeout, job.models,
                                       preparer=preparer)
            chosen = options.selection
            scheduler = Scheduler(gateway, ledger, settings, run_id, tally,
                                  price=_pricer(job.models), throttle=throttle,
                                  key_salt=f":run{run_id}" if chosen.force
                                  or chosen.redo_rejected else "",
                                  keep_aside=redo.rejected_files(ledger)
                                  if chosen.redo_rejected else None,
                                  endpoint=job.provider.endpoint,
                                  spool=spool.folder(job.ledger_path),
                                  board=Board(job.manifest.routing or Routing()))
            api = batcher.connect(session, provider) if batcher else None
            if batcher and api and batcher.settings.batch:  # first: the provider's clock starts
                await batcher.submit(api, batchmode.to_batch(
                    job.manifest.tasks(), ledger, options.selection, job.models, plan, batcher,
                    job.provider.endpoint))
                tally.total -= batcher.outcome.batched
            # The plan has adopted whatever finished work was on disk: no need to look again.
            walked = walk(job.manifest.tasks(), ledger, found=Found.SKIP,
                          endpoint=job.provider.endpoint)
            walked = (w for w in walked if not (batcher and batcher.takes(w[0])))
            walked = _note_resent(walked, chosen, scheduler.billed_before, ledger)
            # Each input's size for the estimate: the ledger row the walk just read.
            estimate = functools.partial(job.models.estimate, known=ledger.stored_dimensions)
            work = redo.with_prompt_suffix(select(walked, chosen, job.models, plan, estimate),
                                           options.prompt_suffix)
            async with anyio.create_task_group() as group:
                if options.signals:
                    group.start_soon(_watch_signals, scheduler, group.cancel_scope,
                                     settings.grace, signalled)
                group.start_soon(functools.partial(
                    progress.show, tally, throttle.cooldown.remaining,
                    every=settings.progress_every,
                    quiet=options.quiet, flush=ledger.flush))
                await scheduler.run(work)
                group.cancel_scope.cancel()
            if batcher and api and batcher.wait and not scheduler.stop and not signalled:
                await batcher.wait_all(api, signalled)
    return _conclude(job, ledger, options, tally, plan, scheduler.stop, warnings, run_id,
                     signalled, endpoint, notes=scheduler.board.notes, batcher=batcher)


def _conclude(job: Job, ledger: Ledger, options: RunOptions, tally: Tally, plan: Plan,
              stop: Stop | None, warnings: tuple[str, ...], run_id: int | None = None,
              signalled: list[signal.Signals] | None = None,
              endpoint: str | None = None, notes: list[str] | None = None,
              batcher: Batcher | None = None) -> Outcome:
    """Exit code, the run's ledger row and the summary."""
    code = _exit_code(tally, stop, signalled or [], plan.held + (batcher.problems if batcher
                                                                 else 0))
    counts = {"succeeded": tally.succeeded, "failed": tally.failed, "unknown": tally.unknown}
    if run_id is None:
        run_id = ledger.start_run(job.manifest.path, {"flags": options.flags,
                                                      "provider": job.provider.name})
    ledger.finish_run(run_id, code, counts)
    event(logging.INFO, "run finished", run_id=run_id, exit_code=code,
          spent=round(tally.spent, 4), **counts)
    provider = job.provider
    result = summary.build(
        job.manifest.path, tally, plan, provider=provider.name, exit_code=code,
        stopped=None if stop is None else stop.reason, ledger=job.ledger_path,
        held=plan.held, endpoint=endpoint or summary.endpoint(provider.name, provider.base_url),
        simulated=simulated(provider), warnings=warnings, repeat=options.repeat,
        notes=notes or [], batch=batcher.summary() if batcher else None)
    return Outcome(code, result, None if stop is None else stop.fatal)


def _note_resent(walked: Iterable[tuple[Task, str, Category]], selection: Selection,
                 billed_before: set[str], ledger: Ledger) -> Iterator[tuple[Task, str, Category]]:
    """Tasks this run sends again that an earlier run may have been billed for (unknown, or
    failed on a paid but unusable answer): a paid answer now is a possible double charge."""
    for task, fp, category in walked:
        if category in (Category.UNKNOWN, Category.FAILED, Category.RETRY) and (
                selection.wants(task, category)):
            record = ledger.get(task.id) if category is not Category.UNKNOWN else None
            if record is None or record.error_type == BadResponse.kind:
                billed_before.add(task.id)
        yield task, fp, category


def _exit_code(tally: Tally, stop: Stop | None, signalled: list[signal.Signals],
               held: int) -> int:
    if signalled:
        return EXIT_SIGNAL[signalled[0]]
    if stop is not None and stop.fatal is not None:
        return RunAborted.exit_code
    if tally.failed or tally.unknown or tally.done < tally.total or held:
        return EXIT_FAILED
    return EXIT_OK
