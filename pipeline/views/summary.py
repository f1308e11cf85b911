"""The end-of-run summary: one dict (for --json) and its text for people."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from pipeline.ledger.plan import Plan
from pipeline.views.tally import Tally


def build(manifest: Path, tally: Tally, plan: Plan, *, provider: str, exit_code: int,
          stopped: str | None, ledger: Path, held: int = 0,
          notes: list[str] | None = None,
          batch: dict[str, Any] | None = None) -> dict[str, Any]:
    """`held`: failed or unknown tasks this run's flags left unsent. `batch`: what batch
    mode submitted, collected, spent and saved (run/batch.py), when it played a part."""
    elapsed = tally.elapsed()
    reprocess = None
    if tally.failed or tally.unknown or held:
        reprocess = f"imgedit run {shlex.quote(str(manifest))} --only-failed"
    return {
        "manifest": str(manifest),
        "provider": provider,
        "exit_code": exit_code,
        "tasks": sum(plan.categories.values()),
        "plan": dict(plan.categories),
        "sent": tally.total,
        "succeeded": tally.succeeded,
        "failed": tally.failed,
        "unknown": tally.unknown,
        "skipped": sum(plan.categories.values()) - tally.total - (batch or {}).get("batched", 0),
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
        "batch": batch,
    }


def text(s: dict[str, Any]) -> str:
    lines = [
        f"{s['manifest']}: {s['tasks']} tasks via {s['provider']}; "
        f"{s['sent']} to send, {s['skipped']} already done or held",
    ]
    batch = _batch_lines(s["batch"]) if s.get("batch") else []
    if batch and s["batch"]["batched"]:
        lines[0] = lines[0].replace(" to send,", f" to send live, {s['batch']['batched']} "
                                    "in batches,")
    lines += batch
    if s["sent"] == 0 and not batch:
        lines.append("nothing to send: every task is done (or held; see `imgedit status`)")
    elif s["sent"]:
        lines.append(
            f"succeeded {s['succeeded']}, failed {s['failed']}, unknown {s['unknown']}, "
            f"not started {s['not_started']} | {s['requests']} requests in {s['elapsed_s']:.1f}s "
            f"({s['tasks_per_s']:.2f} tasks/s) | spent ${s['spent']:.2f}")
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
    for failure in s["failures"][:5]:
        lines.append(f"  failed {failure['id']}: {failure['reason']}")
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
