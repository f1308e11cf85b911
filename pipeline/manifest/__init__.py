"""The manifest: YAML in, checked tasks out.

Owns reading the YAML with line numbers, the entries (files, globs, CSV rows),
the `Manifest` itself and preflight, the one pass that checks every task's
files, ids, outputs and model limits before anything is sent.

Never sends a request, never opens the ledger, never writes a file: every
problem becomes a message naming file:line (exit 2), not an exception.
"""
