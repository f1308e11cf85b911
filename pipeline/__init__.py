"""imgedit: batch image edits through an OpenAI-compatible gateway, keeping every result.

The subpackages read as the data flow, and imports point one way, down it:

    manifest/ -> ledger/ -> run/ -> gateway/ -> run/writer -> ledger/ -> views/

`task` and `errors` are the shared vocabulary; `config/` sits under everything;
`simulator/` stands apart (see tests/test_layout.py for the enforced order).
"""

__version__ = "0.1.0"
