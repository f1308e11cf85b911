"""The end-of-run summary and validate's plan: one dict each (for --json and the
library's typed results) and their text for people."""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.ledger.plan import Plan
from pipeline.views.tally import Tally

FAILURES_SHOWN = 5
IN_PROCESS = "the in-process simulator"


def endpoint(provider: str, base_url: str | None) -> str:
    """Where requests really go: the base URL's host, whatever the provider is called."""
    if not base_url:
        return IN_PROCESS if provider == "simulator" else provider
    return urlsplit(base_url).netloc or base_url


def money(amount: float, simulated: bool) -> str:
    """A rehearsal's cost is what it would have cost; nothing was billed."""
    return f"simulated ${amount:.2f} (nothing billed)" if simulated else f"spent ${amount:.2f}"


def build(manifest: Path, tally: Tally, plan: Plan, *, provider: str, exit_code: int,
          stopped: str | None, ledger: Path, held: int = 0, endpoint: str | None = None,
          simulated: bool = False, warnings: Iterable[str] = (),
          repeat: Iterable[str] = (), notes: list[str] | None = None,
          batch: dict[str, Any] | None = None) -> dict[str, Any]:
    """`held`: failed or unknown tasks this run's flags left unsent; `repeat`: flags a
    reprocess command needs again (--base-url, --config...); `notes`: route switches;
    `batch`: what batch mode submitted, collected, spent and saved (run/batch.py)."""
    elapsed = tally.elapsed()
    reprocess = None
    if tally.failed or tally.unknown or held:
        flags = "".join(f" {shlex.quote(f)}" for f in repeat)
        reprocess = f"imgedit run {shlex.quote(str(manifest))}{flags} --only-failed"
    tasks = sum(plan.categories.values())
    return {
        "manifest": str(manifest),
        "provider": provider,
        "endpoint": endpoint or provider,
        "simulated": simulated,
        "exit_code": exit_code,
        "tasks": tasks,
        "plan": dict(plan.categories),
        "sent": tally.total,
        "succeeded": tally.succeeded,
        "failed": tally.failed,
        "unknown": tally.unknown,
        "skipped": tasks - tally.total - (batch or {}).get("batched", 0),
        "left_out": plan.left_out,
        "not_started": max(0, tally.total - tally.done),
        "held": held,
        "requests": tally.requests,
        "retries": dict(tally.retries_by_cause),
        "possible_double_charges": tally.possible_double_charges,
        "spent": round(tally.spent, 4),
        "estimate": round(plan.estimate, 4),
        "elapsed_s": round(elapsed, 3),
        "tasks_per_s": round(tally.done / elapsed, 3) if elapsed > 0 else 0.0,
        "stopped": stopped,
        "notes": list(notes or []),  # route switches and models stopped during the run
        "failures": [{"id": i, "reason": r} for i, r in tally.failures],
        "outputs": tally.outputs,
        "reprocess": reprocess,
        "ledger": str(ledger),
        "warnings": list(warnings),
        "batch": batch,
    }


def header(s: dict[str, Any]) -> str:
    """`N tasks via HOST; A to send, B already done or held[, C not selected]`."""
    done_or_held = s["skipped"] - s["left_out"]
    line = (f"{s['manifest']}: {s['tasks']} tasks via {s['endpoint']}; "
            f"{s['sent']} to send, {done_or_held} already done or held")
    if s["left_out"]:
        line += f", {s['left_out']} not selected (--only / --limit)"
    return line


def text(s: dict[str, Any]) -> str:
    lines = [header(s)]
    batch = _batch_lines(s["batch"]) if s.get("batch") else []
    if batch and s["batch"]["batched"]:
        lines[0] = lines[0].replace(" to send,", f" to send live, {s['batch']['batched']} "
                                    "in batches,")
    lines += batch
    if s["sent"] == 0 and not batch:
        lines.append("nothing to send: every selected task is done (or held; see "
                     "`imgedit status`)" if s["left_out"] else
                     "nothing to send: every task is done (or held; see `imgedit status`)")
    elif s["sent"]:
        lines.append(
            f"succeeded {s['succeeded']}, failed {s['failed']}, unknown {s['unknown']}, "
            f"not started {s['not_started']} | {s['requests']} requests in {s['elapsed_s']:.1f}s "
            f"({s['tasks_per_s']:.2f} tasks/s) | {money(s['spent'], s['simulated'])}")
    if s["outputs"]:
        more = s["succeeded"] - len(s["outputs"])
        lines.append("edited images:" + "".join(f"\n  {p}" for p in s["outputs"])
                     + (f"\n  ... and {more} more (see the ledger)" if more > 0 else ""))
    if s["retries"]:
        causes = ", ".join(f"{k} {v}" for k, v in sorted(s["retries"].items()))
        lines.append(f"retries: {causes}")
    if s["possible_double_charges"]:
        lines.append(f"possible double charges: {s['possible_double_charges']} "
                     "(answers after one that may have been billed: none came, or unusable)")
    if s["held"]:
        lines.append(f"held back: {s['held']} task(s) that failed terminally or may have been "
                     "billed (see `imgedit status`)")
    if s["stopped"]:
        lines.append(f"stopped: {s['stopped']}")
    lines += [f"note: {note}" for note in s.get("notes", [])]
    for failure in s["failures"][:FAILURES_SHOWN]:
        lines.append(f"  failed {failure['id']}: {failure['reason']}")
    hidden = s["failed"] + s["unknown"] - min(len(s["failures"]), FAILURES_SHOWN)
    if hidden > 0:
        lines.append(f"  ... and {hidden} more (`imgedit status` lists every one)")
    if s["reprocess"]:
        lines.append(f"reprocess with: {s['reprocess']}")
    lines.append(f"ledger: {s['ledger']}")
    return "\n".join(lines)


def _batch_lines(b: dict[str, Any]) -> list[str]:
    lines = []
    if b["batched"]:
        lines.append(f"batch mode: {b['batched']} task(s) submitted in {b['batches_created']} "
                     f"batch(es) at half price; {b['waiting']} task(s) wait in provider batches")
    elif b["waiting"]:
        lines.append(f"batch mode: {b['waiting']} task(s) wait in provider batches")
    collected = b["collected"]
    if collected:
        done = ", ".join(f"{k} {v}" for k, v in sorted(collected.items()))
        lines.append(f"collected from batches: {done} | spent ${b['spent']:.2f}, "
                     f"batch mode saved ${b['saved']:.2f}")
        more = collected.get("succeeded", 0) - len(b["outputs"])
        lines.append("edited images from batches:" + "".join(f"\n  {p}" for p in b["outputs"])
                     + (f"\n  ... and {more} more (see the ledger)" if more > 0 else ""))
    if b["back_to_send"]:
        lines.append(f"back to send: {b['back_to_send']} task(s) their batch never ran")
    return lines


def plan_dict(manifest: Path, plan: Plan, warnings: Iterable[str], *, endpoint: str,
              simulated: bool, left_out: Iterable[str] = (),
              batch_prices: bool = False) -> dict[str, Any]:
    """What validate (or run --dry-run) found: counts by category, what would be sent."""
    return {
        "manifest": str(manifest),
        "endpoint": endpoint,
        "simulated": simulated,
        "tasks": sum(plan.categories.values()),
        "plan": dict(plan.categories),
        "to_send": plan.to_send,
        "left_out": plan.left_out,
        "estimate": round(plan.estimate, 4),
        "warnings": list(warnings),
        "defaults_left_out": list(left_out),  # per model: defaults it does not take
        "batch_prices": batch_prices,  # batch mode: the estimate is at batch prices
    }


def plan_text(p: dict[str, Any]) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in sorted(p["plan"].items())) or "no tasks"
    cost = f"estimated cost ${p['estimate']:.2f}" + (" (simulated)" if p["simulated"] else "")
    if p.get("batch_prices"):
        cost += " at batch prices where a model can batch"
    line = (f"{p['manifest']}: {p['tasks']} tasks ({counts}); would send {p['to_send']}, "
            f"{cost} via {p['endpoint']}")
    return "\n".join([line, *p["defaults_left_out"]])
