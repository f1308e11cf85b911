"""One attempt of one task at the gateway: the client, its routes, retries and limits.

Owns building a request, reading the answer into images (or a classified
error), the retry policy and the pacing objects (rate, cooldown, concurrency).

Never writes a file or a ledger row, and never sends the key anywhere but the
gateway's own origin.
"""
