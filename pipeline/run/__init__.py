"""One run of a manifest: the runner, the scheduler and its workers, the writer.

Owns the order of a run (lock, check, plan, send, write, summarize), the
bounded queue and workers, shutdown on signals, the budget, and putting each
answer on disk before it is recorded as a success.

Never parses YAML or HTTP itself: it hands tasks to the gateway and answers
to the writer and the ledger.
"""
