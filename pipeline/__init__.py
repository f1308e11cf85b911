"""imgedit: batch image edits through an OpenAI-compatible gateway, keeping every result.

The subpackages read as the data flow:

    manifest/ -> ledger/ -> run/ -> gateway/ -> run/writer -> ledger/ -> views/

Imports point one way: task and errors (the shared vocabulary) < config < manifest
< ledger < gateway < views < run < cli and api; `simulator/` stands apart
(tests/test_layout.py enforces the order).
"""

__version__ = "0.1.0"
