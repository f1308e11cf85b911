"""imgedit: batch image edits through an OpenAI-compatible gateway, keeping every result.

Data flow (one module per step):
manifest -> fingerprint -> plan -> scheduler (limits, retry) -> client -> writer -> ledger
"""

__version__ = "0.1.0"
