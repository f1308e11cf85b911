"""What is done and where: the SQLite ledger, fingerprints, the plan, sidecars.

Owns the schema and its migrations, task and attempt records, the run lock,
the fingerprint that says "this exact edit", the plan (what to send, what is
done), the sidecar beside each result, and durable (atomic) file writes.

Never sends a request and never decides how to retry: it records what the run
tells it, inside shielded writes, and answers what is done.
"""
