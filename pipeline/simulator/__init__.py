"""The local gateway simulator: a stand-in for the relay, over real HTTP on loopback.

Owns the aiohttp app (`app`), request parsing (`request`), rendering edits
with Pillow (`render`) and fault injection (`faults`).

Never imports anything of the product but the shared vocabulary (task,
errors); the product imports it only to start it (`--provider simulator`, `imgedit simulate`).
"""
