"""`python -m pipeline` is the same program as the `imgedit` console script."""

from pipeline.cli import entry

entry()
