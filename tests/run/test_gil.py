"""The short switch interval holds while a run sends, and the caller's comes back after."""

from __future__ import annotations

import sys

import pytest

from pipeline.run.gil import LOOP_FIRST_S, loop_first


def test_the_interval_is_short_inside_and_the_callers_own_after() -> None:
    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.01)
        with pytest.raises(RuntimeError), loop_first():
            assert sys.getswitchinterval() == pytest.approx(LOOP_FIRST_S, rel=0.05)
            raise RuntimeError("a run that ends badly gives it back too")
        assert sys.getswitchinterval() == pytest.approx(0.01, rel=0.05)
        sys.setswitchinterval(0.0001)  # a caller who asked for shorter keeps it
        with loop_first():
            assert sys.getswitchinterval() == pytest.approx(0.0001, rel=0.05)
    finally:
        sys.setswitchinterval(before)
