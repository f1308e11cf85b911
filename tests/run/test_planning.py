"""Check and plan in one pass over the manifest: each good task is planned as the check
passes it, yet a problem found anywhere in the manifest is still exit 2 with every
problem named and nothing sent, before the plan's own complaints."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.simulator.app import SimulatorThread
from tests.conftest import TEST_KEY, Cli, tiny_image, write_manifest
from tests.run.test_ours import glob_job


def test_a_problem_late_in_the_manifest_comes_before_the_plan(
        tmp_path: Path, cli: Cli, sim: SimulatorThread) -> None:
    glob_job(tmp_path, 2, name="a.yaml")
    assert cli("run", "a.yaml", "--base-url", sim.base_url).returncode == 0
    sent = sim.stats().requests
    # b.yaml asks the same work (its outputs clash with a.yaml's), then a missing file.
    write_manifest(tmp_path, """
        version: 1
        defaults: {model: gpt-image-1, quality: low, size: 1024x1024}
        tasks:
          - glob: "catalog/*.png"
            prompt: Put it on white
          - images: missing.png
            prompt: Put it on white
        """, name="b.yaml")
    for command in ("validate", "run"):
        done = cli(command, "b.yaml", "--base-url", sim.base_url)
        assert done.returncode == 2, done.stdout
        assert "file not found" in done.stderr and "missing.png" in done.stderr
        assert "already exists and is not the result" not in done.stderr
        assert "Traceback" not in done.stderr
    assert sim.stats().requests == sent


def test_a_rerun_sends_only_what_changed_or_went_missing(
        tmp_path: Path, cli: Cli, sim: SimulatorThread) -> None:
    glob_job(tmp_path, 4)
    run = ("run", "job.yaml", "--base-url", sim.base_url, "--json")
    assert cli.json(*run)[0] == 0
    (tmp_path / "catalog/c00.edited.png").unlink()  # an output deleted
    tiny_image(tmp_path / "catalog/c01.png", (1, 2, 3))  # an input changed
    code, summary = cli.json(*run)
    assert (code, summary["sent"]) == (0, 2)
    assert summary["plan"] == {"done": 2, "changed": 2}
    code, summary = cli.json(*run)
    assert (code, summary["plan"], summary["sent"]) == (0, {"done": 4}, 0)


def test_a_first_run_estimates_from_the_sizes_its_check_found(tmp_path: Path) -> None:
    """The plan's estimate of the tasks to send takes each input's width and height from
    the check pass that decoded it a moment before: no input's header is read again."""
    from pipeline.config import models as models_module
    from pipeline.run import runner

    manifest = glob_job(tmp_path, 6)
    models_module._shape.cache_clear()
    checked = runner.check(runner.RunOptions(manifest=manifest, base_url="http://127.0.0.1:9/v1"))
    assert checked.plan.to_send == 6
    assert checked.plan.estimate == pytest.approx(checked.report.cost)
    assert checked.plan.estimate > 0
    assert models_module._shape.cache_info().misses == 0  # no header opened for the plan


def test_the_send_pass_estimates_from_the_sizes_the_ledger_keeps(
        tmp_path: Path, sim: SimulatorThread, monkeypatch: pytest.MonkeyPatch) -> None:
    """While sending, the plan is counted again (the summary's estimate): each input's
    size comes from the ledger row the walk read, not from its header, in the event loop."""
    from pipeline import api
    from pipeline.config import models as models_module

    monkeypatch.setenv("IMGEDIT_API_KEY", TEST_KEY)
    manifest = glob_job(tmp_path, 6)
    models_module._shape.cache_clear()
    summary = api.run(manifest, base_url=sim.base_url)
    assert summary.sent == 6 and summary.estimate > 0
    assert summary.estimate == pytest.approx(api.validate(manifest).estimate)
    assert models_module._shape.cache_info().misses == 0


def test_a_plan_stats_each_input_once_whatever_its_chunks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan walks in chunks that do not line up with the check pass's (16, 32, ...
    then 500, against 500): it still takes every hash the check vouched for, so each
    unchanged input is stat()ed once per pass, and a new one once besides its read."""
    import os
    from collections import Counter

    from pipeline.ledger.plan import Found, Selection
    from pipeline.ledger.store import Ledger
    from pipeline.run import planning, runner

    data = tiny_image(tmp_path / "first.png").read_bytes()
    inputs = [tmp_path / "catalog" / f"c{i:04d}.png" for i in range(1100)]
    inputs[0].parent.mkdir()
    for path in inputs:
        path.write_bytes(data)
    manifest = write_manifest(tmp_path, """
        version: 1
        defaults: {model: gpt-image-1, quality: low, size: 1024x1024}
        tasks:
          - glob: "catalog/*.png"
            prompt: Put it on white
        """)
    job = runner.prepare(runner.RunOptions(manifest=manifest, base_url="http://127.0.0.1:9/v1"))
    stats: Counter[str] = Counter()
    real_stat = os.stat

    def counted(path: object, *args: object, **kwargs: object) -> os.stat_result:
        stats[os.fspath(path)] += 1  # type: ignore[arg-type]
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", counted)
    for per_input in (2, 1):  # new: stat, read, stat again (a file written meanwhile); known
        stats.clear()
        with Ledger.open(tmp_path / "job.ledger.sqlite") as ledger:
            checking = planning.check(job, ledger)
            plan = planning.plan(job, ledger, Selection(), checking, found=Found.COUNT)
        assert plan.to_send == len(inputs)
        assert {stats[str(path)] for path in inputs} == {per_input}


def test_a_new_task_with_nothing_at_its_outputs_has_no_sidecar_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finished work the ledger does not know of is adopted from its sidecar, but only when
    something is at the task's output paths: a new catalog's plan opens no sidecar."""
    import io

    from pipeline.run import runner

    manifest = glob_job(tmp_path, 3)
    opened: list[str] = []
    real_open = io.open

    def spied(file: object, *args: object, **kwargs: object) -> object:
        opened.append(str(file))
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(io, "open", spied)
    checked = runner.check(runner.RunOptions(manifest=manifest, base_url="http://127.0.0.1:9/v1"))
    assert checked.plan.to_send == 3
    assert not [path for path in opened if path.endswith(".json")]
