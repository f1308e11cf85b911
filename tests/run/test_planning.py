"""Check and plan in one pass over the manifest: each good task is planned as the check
passes it, yet a problem found anywhere in the manifest is still exit 2 with every
problem named and nothing sent, before the plan's own complaints."""

from __future__ import annotations

from pathlib import Path

from pipeline.simulator.app import SimulatorThread
from tests.conftest import Cli, tiny_image, write_manifest
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
