"""A run's batch mode, set up: its Batcher (when the run touches batches), its ledger row,
and the batches that have ended collected, before the plan.

It loads batch mode's network code (run/batch.py) only when a run needs it, so
`validate` and a run that has nothing to do with batches never import aiohttp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.ledger.store import Ledger
from pipeline.run import batchmode, spool
from pipeline.run.pricing import pricer

if TYPE_CHECKING:
    from pipeline.run.batch import Batcher


def batcher_for(job: Any, ledger: Ledger, options: Any) -> Batcher | None:
    """`job` and `options` are the runner's Job and RunOptions. None when the run touches no
    batch: batch mode off, no --wait, and no batch open in the ledger."""
    if not batchmode.touches_batches(job.settings, ledger, options.wait):
        return None
    from pipeline.run.batch import Batcher

    run_id = ledger.start_run(job.manifest.path, {"flags": options.flags,
                                                  "provider": job.provider.name})
    batcher = Batcher(models=job.models, provider=job.provider,
                      settings=batchmode.settings_for(job.settings, options.selection),
                      ledger=ledger, price=pricer(job.models), tasks=job.manifest.tasks,
                      run_id=run_id, spool=spool.folder(job.ledger_path), wait=options.wait,
                      quiet=options.quiet)
    batcher.collect_now()
    return batcher
