"""While a run sends: a short switch interval and the heap frozen; the caller's own after."""

from __future__ import annotations

import gc
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


def test_what_exists_when_sending_starts_is_frozen_and_thawed_after() -> None:
    assert gc.get_freeze_count() == 0
    with pytest.raises(RuntimeError), loop_first():
        # Every object of the process so far sits out the collector's passes.
        assert gc.get_freeze_count() > 1000
        raise RuntimeError("a run that ends badly thaws it too")
    assert gc.get_freeze_count() == 0


def test_a_heap_the_caller_froze_stays_frozen() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with loop_first():
            assert gc.get_freeze_count() == frozen  # not frozen again, nor thawed
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
