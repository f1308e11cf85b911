"""`imgedit run`: wire a manifest, the config, the ledger and the scheduler into one run.

Order matters and is the contract: validate everything (exit 2, nothing
sent), take the lock (exit 75), plan against the ledger, check the budget,
then send. Signals stop launching, give in-flight requests a grace period,
then cancel. The key is handed to the client and to nothing else.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio

from pipeline.config.models import Models
from pipeline.config.settings import (
    Provider,
    Settings,
    config_dir,
    config_file,
    load_provider,
    parse_rate,
    read_yaml,
)
from pipeline.config.settings import resolve_settings as _resolve
from pipeline.errors import ConfigError, InputError, RunAborted
from pipeline.gateway.client import Answer, Gateway
from pipeline.gateway.limits import Cooldown, RateLimiter
from pipeline.ledger import store as ledger_mod
from pipeline.ledger.lock import RunLock
from pipeline.ledger.plan import Category, Found, Plan, Selection, select, walk
from pipeline.ledger.store import Ledger
from pipeline.manifest import load as manifest_mod
from pipeline.manifest.preflight import check_all
from pipeline.run.prepare import Preparer, cache_folder
from pipeline.run.scheduler import Scheduler, Stop
from pipeline.simulator.app import SimulatorOptions, running_simulator
from pipeline.task import Task
from pipeline.views import progress, summary
from pipeline.views.logs import event
from pipeline.views.tally import Tally

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


@dataclass
class Job:
    """Everything resolved before anything is sent."""

    manifest: manifest_mod.Manifest
    models: Models
    settings: Settings
    provider: Provider
    ledger_path: Path


def prepare(options: RunOptions) -> Job:
    """Load the manifest and the config; raises InputError (exit 2). Files and model
    limits are checked by `_check`, once the ledger's cache can vouch for unchanged files."""
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
    ledger_path = options.ledger or ledger_mod.default_path(manifest.path)
    return Job(manifest, models, settings, provider, ledger_path)


def plan_only(job: Job, ledger: Ledger, selection: Selection, *,
              found: Found = Found.ADOPT) -> Plan:
    plan = Plan()
    for _ in select(walk(job.manifest.tasks(), ledger, found=found), selection, job.models,
                    plan):
        pass
    return plan


def _check(job: Job, ledger: Ledger) -> None:
    """Every file, id, output and model limit; raises ManifestError with all problems."""
    check_all(job.manifest, job.models, known=ledger.known_format)


def run(options: RunOptions, out: Callable[[str], None]) -> int:
    job = prepare(options)
    if options.dry_run:
        return _dry_run(job, options, out)
    lock = RunLock(job.ledger_path, manifest=job.manifest.path)
    with lock, Ledger.open(job.ledger_path) as ledger:
        _check(job, ledger)
        plan = plan_only(job, ledger, options.selection)
        max_cost = job.settings.max_cost
        if max_cost is not None and plan.estimate > max_cost:
            raise InputError(
                f"the estimated cost ${plan.estimate:.2f} is above --max-cost {max_cost:g}; "
                "raise the budget or narrow the run with --limit / --only")
        if plan.to_send and job.provider.api_key is None:
            raise ConfigError(
                f"no API key: set {job.provider.api_key_env or 'IMGEDIT_API_KEY'} "
                "(or IMGEDIT_API_KEY) in the environment")
        if plan.to_send == 0:  # a finished catalog: no second pass, no simulator, no session
            return _conclude(job, ledger, options, Tally(), plan, Stop(), out)
        return anyio.run(_send, job, ledger, options, plan.to_send, out)


def _dry_run(job: Job, options: RunOptions, out: Callable[[str], None]) -> int:
    """validate / --dry-run: no lock, no writes; an existing ledger is only read."""
    with tempfile.TemporaryDirectory(prefix="imgedit-plan-") as scratch:
        path = job.ledger_path if job.ledger_path.exists() else Path(scratch, "plan.sqlite")
        with Ledger.open(path, recover=False) as ledger:
            _check(job, ledger)
            plan = plan_only(job, ledger, options.selection, found=Found.COUNT)
    out(describe_plan(job, plan))
    return EXIT_OK


def describe_plan(job: Job, plan: Plan) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in sorted(plan.categories.items())) or "no tasks"
    return (f"{job.manifest.path}: {sum(plan.categories.values())} tasks ({counts}); "
            f"would send {plan.to_send}, estimated cost ${plan.estimate:.2f} "
            f"via {job.provider.name}")


@contextlib.asynccontextmanager
async def _gateway_url(provider: Provider) -> AsyncIterator[str]:
    if provider.base_url:
        yield provider.base_url
        return
    async with running_simulator(SimulatorOptions.from_mapping(provider.simulator or {})) as sim:
        yield sim.base_url


async def _send(job: Job, ledger: Ledger, options: RunOptions, to_send: int,
                out: Callable[[str], None]) -> int:
    settings = job.settings
    tally = Tally(total=to_send)
    plan = Plan()  # counted again as tasks stream, so the summary matches what was sent
    signalled: list[signal.Signals] = []
    cooldown = Cooldown()
    limiter = RateLimiter(parse_rate(settings.rate)) if settings.rate else None
    run_id = ledger.start_run(job.manifest.path, {"flags": options.flags,
                                                  "provider": job.provider.name})
    event(logging.INFO, "run started", run_id=run_id, manifest=str(job.manifest.path),
          provider=job.provider.name, to_send=to_send, concurrency=settings.concurrency,
          rate=settings.rate)
    async with _gateway_url(job.provider) as base_url:
        provider = Provider(**{**job.provider.__dict__, "base_url": base_url})
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            gateway = Gateway(session, provider, settings.timeout)
            scheduler = Scheduler(gateway, ledger, settings, run_id, tally,
                                  price=_pricer(job.models), limiter=limiter, cooldown=cooldown,
                                  key_salt=f":run{run_id}" if options.selection.force else "",
                                  preparer=Preparer(cache_folder(job.ledger_path), ledger,
                                                    job.models))
            # The plan has adopted whatever finished work was on disk: no need to look again.
            walked = walk(job.manifest.tasks(), ledger, found=Found.SKIP)
            walked = _note_resent(walked, options.selection, scheduler.unknown_resent)
            work = select(walked, options.selection, job.models, plan)
            async with anyio.create_task_group() as group:
                group.start_soon(_watch_signals, scheduler, group.cancel_scope, settings.grace,
                                 signalled)
                group.start_soon(functools.partial(
                    progress.show, tally, cooldown.remaining, every=settings.progress_every,
                    quiet=options.quiet, flush=ledger.flush))
                await scheduler.run(work)
                group.cancel_scope.cancel()
    return _conclude(job, ledger, options, tally, plan, scheduler.stop, out, run_id, signalled)


def _conclude(job: Job, ledger: Ledger, options: RunOptions, tally: Tally, plan: Plan,
              stop: Stop, out: Callable[[str], None], run_id: int | None = None,
              signalled: list[signal.Signals] | None = None) -> int:
    """Exit code, the run's ledger row, the summary (text or --json) and abort advice."""
    code = _exit_code(tally, stop, signalled or [], plan.held)
    counts = {"succeeded": tally.succeeded, "failed": tally.failed, "unknown": tally.unknown}
    if run_id is None:
        run_id = ledger.start_run(job.manifest.path, {"flags": options.flags,
                                                      "provider": job.provider.name})
    ledger.finish_run(run_id, code, counts)
    event(logging.INFO, "run finished", run_id=run_id, exit_code=code,
          spent=round(tally.spent, 4), **counts)
    result = summary.build(job.manifest.path, tally, plan, provider=job.provider.name,
                           exit_code=code, stopped=stop.reason, ledger=job.ledger_path,
                           held=plan.held)
    if options.json:
        out(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        print(summary.text(result), file=sys.stderr if options.quiet else sys.stdout)
    if code == RunAborted.exit_code:
        print(_abort_advice(stop.fatal), file=sys.stderr)
    return code


def _pricer(models: Models) -> Callable[[Task, Answer], float]:
    def price(task: Task, answer: Answer) -> float:
        from_usage = models.cost_from_usage(task.model, answer.usage) if answer.usage else None
        return from_usage if from_usage is not None else models.estimate(task)

    return price


async def _watch_signals(scheduler: Scheduler, scope: anyio.CancelScope, grace: float,
                         signalled: list[signal.Signals]) -> None:
    """First signal: stop launching, let in-flight requests finish within `grace`.
    Second signal, or grace over: cancel what is left (recorded as unknown)."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            signalled.append(signal.Signals(signum))
            if len(signalled) > 1:
                scope.cancel()
                return
            scheduler.stop.set(f"interrupted by {signal.Signals(signum).name}")
            print(f"{signal.Signals(signum).name}: no new requests; waiting up to {grace:g}s "
                  "for those in flight (signal again to stop now)", file=sys.stderr)
            scope.deadline = anyio.current_time() + grace


def _note_resent(walked: Iterable[tuple[Task, str, Category]], selection: Selection,
                 unknown_resent: set[str]) -> Iterator[tuple[Task, str, Category]]:
    """Unknown tasks this run sends again: each is a possible double charge."""
    for task, fp, category in walked:
        if category is Category.UNKNOWN and selection.wants(task, category):
            unknown_resent.add(task.id)
        yield task, fp, category


def _exit_code(tally: Tally, stop: Stop, signalled: list[signal.Signals], held: int) -> int:
    if signalled:
        return EXIT_SIGNAL[signalled[0]]
    if stop.fatal is not None:
        return RunAborted.exit_code
    if tally.failed or tally.unknown or tally.done < tally.total or held:
        return EXIT_FAILED
    return EXIT_OK


def _abort_advice(exc: Exception | None) -> str:
    status = getattr(exc, "status", None)
    code = getattr(exc, "code", None) or getattr(exc, "type", None)
    if code in ("insufficient_quota", "insufficient_user_quota"):
        advice = "top up the account's quota, then run again"
    elif code == "model_not_found":
        advice = "pick a model this gateway offers (set `model:` in the manifest)"
    elif status in (401, 403):
        advice = "check the API key in the provider's environment variable"
    else:
        advice = "fix the cause above, then run again"
    return f"run aborted: {exc}\nwhat to do: {advice}; finished work is kept and will be skipped."
