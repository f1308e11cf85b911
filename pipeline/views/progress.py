"""Show a run moving: a live panel on a terminal, a plain line every N seconds
without one (cron, CI), nothing but the summary with --quiet. Reads the Tally,
never changes it."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

import anyio

from pipeline.views.tally import Tally

if TYPE_CHECKING:
    from rich.table import Table


def line(t: Tally, cooldown: float = 0.0) -> str:
    eta = t.eta()
    parts = [
        f"{t.done}/{t.total} done",
        f"{t.succeeded} ok",
        f"{t.failed} failed",
        f"{t.unknown} unknown",
        f"{t.in_flight} in flight",
        f"{t.retrying} retrying",
        f"{t.request_rate() * 60:.1f} req/min",
        f"{'simulated' if t.simulated else 'spent'} ${t.spent:.2f}",
    ]
    if cooldown > 0:
        parts.append(f"cooling down {cooldown:.0f}s")
    if eta is not None and t.done < t.total:
        parts.append(f"eta {_duration(eta)}")
    return "progress: " + ", ".join(parts)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = width * done // total if total else width
    return f"[green]{'━' * filled}[/][dim]{'━' * (width - filled)}[/]"


def _panel(t: Tally, cooldown: float) -> Table:
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("done", f"{_bar(t.done, t.total)} {t.done}/{t.total}")
    table.add_row("succeeded", f"[green]{t.succeeded}[/]")
    table.add_row("failed", f"[red]{t.failed}[/]" if t.failed else "0")
    table.add_row("unknown", f"[yellow]{t.unknown}[/]" if t.unknown else "0")
    table.add_row("retrying / in flight", f"{t.retrying} / {t.in_flight}")
    table.add_row("request rate", f"{t.request_rate() * 60:.1f}/min")
    if cooldown > 0:
        table.add_row("cooldown", f"[yellow]{cooldown:.0f}s[/]")
    eta = t.eta()
    table.add_row("eta", _duration(eta) if eta is not None and t.done < t.total else "-")
    table.add_row("simulated" if t.simulated else "spent", f"${t.spent:.2f}")
    return table


async def show(t: Tally, cooldown: Callable[[], float], *, every: float, quiet: bool,
               flush: Callable[[], None] = lambda: None, stream: TextIO | None = None) -> None:
    """Runs until cancelled; the caller cancels it when the run ends.

    `flush` is called on every tick: it commits the ledger's pending batch even
    when every worker is waiting on a slow request.
    """
    out = stream or sys.stderr
    if quiet:
        while True:
            await anyio.sleep(0.5)
            flush()
    if out.isatty():  # rich is imported for a terminal only: ~20 ms of a cron run's start
        from rich.console import Console
        from rich.live import Live

        with Live(_panel(t, cooldown()), console=Console(file=out), refresh_per_second=4,
                  transient=True) as live:
            while True:
                await anyio.sleep(0.25)
                flush()
                live.update(_panel(t, cooldown()))
    last = anyio.current_time()
    while True:
        await anyio.sleep(min(every, 0.5))
        flush()
        if anyio.current_time() - last >= every:
            last = anyio.current_time()
            print(line(t, cooldown()), file=out, flush=True)
