"""`imgedit status` collects the provider batches that have ended before it counts.

It takes the run lock (a run that holds it collects them itself) and collects
each open batch from the provider it was sent to. Status must show even when
collecting cannot happen: a problem here is a warning, never the status's end.
"""

from __future__ import annotations

import dataclasses
import sys

from pipeline.config.settings import config_dir, load_provider
from pipeline.errors import ImgeditError, LockHeld
from pipeline.ledger import store as ledger_mod
from pipeline.ledger.batches import Batches
from pipeline.ledger.lock import RunLock
from pipeline.ledger.store import Ledger
from pipeline.run.batchstart import batcher_for
from pipeline.run.runner import EXIT_FAILED, EXIT_OK, RunOptions, prepare


def collect_batches(options: RunOptions) -> None:
    """Collect ended batches, unless a run holds the lock (it will)."""
    path = options.ledger or ledger_mod.default_path(options.manifest.resolve())
    if not path.exists():
        return
    with Ledger.open(path, recover=False) as peek:  # the common case: nothing to collect
        if not Batches(peek).open():
            return
    try:
        job = prepare(options)
        with RunLock(job.ledger_path, manifest=job.manifest.path), \
                Ledger.open(job.ledger_path) as ledger:
            # Each batch is collected from the provider it was sent to.
            for name in sorted({r.provider for r in Batches(ledger).open()}):
                provider = load_provider(config_dir(options.config), name, options.base_url)
                batcher = batcher_for(dataclasses.replace(job, provider=provider), ledger, options)
                if batcher is None:  # cannot be: there are open batches
                    continue
                ledger.finish_run(batcher.run_id, EXIT_FAILED if batcher.problems else EXIT_OK,
                                  dict(batcher.outcome.collected))
    except LockHeld:
        return
    except ImgeditError as exc:
        print(f"warning: batches were not collected: {exc}", file=sys.stderr)
