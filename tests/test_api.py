"""pipeline.api without the CLI: typed results, typed errors, the same ledger and outputs.

The simulator runs on loopback; nothing here starts a subprocess except the one
comparison with `imgedit run --json`, which must print the very same summary.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pipeline import api
from tests.conftest import TEST_KEY, Cli, tiny_image, write_manifest

JOB = """
    version: 1
    provider: simulator
    defaults: {model: gpt-image-1, quality: low, size: 1024x1024}
    limits: {rate: unlimited}
    tasks:
      - glob: "photos/*.jpg"
        prompt: white background
"""


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key for the simulator at --base-url, and no backoff sleeps (as Cli has them)."""
    monkeypatch.setenv("IMGEDIT_API_KEY", TEST_KEY)
    monkeypatch.setenv("IMGEDIT_RETRY_WAIT_SCALE", "0")


@pytest.fixture
def job(tmp_path: Path) -> Path:
    for i, name in enumerate(("a.jpg", "b.jpg", "c.jpg")):
        tiny_image(tmp_path / "photos" / name, (60 * i, 90, 200), fmt="JPEG")
    return write_manifest(tmp_path, JOB)


def test_run_returns_a_typed_summary_and_a_rerun_sends_nothing(job: Path, sim) -> None:
    summary = api.run(job, base_url=sim.base_url, concurrency=2)
    assert isinstance(summary, api.Summary) and summary.ok
    assert (summary.sent, summary.succeeded, summary.simulated) == (3, 3, True)
    assert job.parent / "photos/a.edited.png" in summary.outputs
    assert all(p.exists() for p in summary.outputs)
    assert summary.extra == {}, "a key of the CLI's summary that api.Summary does not name"
    with pytest.raises(dataclasses.FrozenInstanceError):
        summary.sent = 0  # type: ignore[misc]
    again = api.run(str(job), base_url=sim.base_url)
    assert (again.sent, again.plan) == (0, {"done": 3})
    assert sim.stats().requests == 3


def test_the_summary_is_the_one_the_cli_prints(job: Path, cli: Cli, sim) -> None:
    code, printed = cli.json("run", str(job), "--base-url", sim.base_url, "--only", "photos/a.jpg")
    summary = api.run(job, base_url=sim.base_url, only=["photos/b.jpg"])
    assert code == 0 and set(printed) == {f.name for f in dataclasses.fields(api.Summary)} - {
        "extra"}
    assert (summary.sent, summary.left_out, summary.plan) == (1, 2, {"done": 1, "new": 2})


async def test_run_inside_a_loop_says_to_await_run_async(job: Path, sim) -> None:
    with pytest.raises(api.InputError, match=r"use `await api\.run_async"):
        api.run(job, base_url=sim.base_url)
    assert sim.stats().requests == 0


async def test_run_async_in_the_callers_loop(job: Path, sim) -> None:
    summary = await api.run_async(job, base_url=sim.base_url, limit=2)
    assert (summary.sent, summary.succeeded, summary.left_out) == (2, 2, 1)
    counts = api.status(job).counts
    assert {k: n for k, n in counts.items() if n} == {"succeeded": 2, "pending": 1}


def test_failures_are_a_summary_not_an_exception(job: Path, simulator) -> None:
    sim = simulator(faults={"moderation": 1.0})
    summary = api.run(job, base_url=sim.base_url)
    assert (summary.ok, summary.exit_code, summary.failed) == (False, 1, 3)
    assert "moderation_blocked" in summary.failures[0].reason
    assert summary.reprocess is not None and "--base-url" in summary.reprocess
    status = api.status(job)
    assert status.counts["failed"] == 3 and status.failures[0].terminal


def test_an_aborted_run_raises_with_its_summary(job: Path, simulator) -> None:
    sim = simulator(faults={"401": 1.0})
    with pytest.raises(api.Aborted) as caught:
        api.run(job, base_url=sim.base_url)
    assert isinstance(caught.value, api.RunAborted) and caught.value.summary.exit_code == 3


def test_validate_gives_the_plan_or_every_problem(job: Path, tmp_path: Path) -> None:
    plan = api.validate(job)
    assert (plan.tasks, plan.to_send, plan.plan) == (3, 3, {"new": 3})
    assert plan.estimate > 0 and plan.simulated and plan.endpoint == "the in-process simulator"
    bad = write_manifest(tmp_path, """
        version: 1
        tasks:
          - images: photos/nope.jpg
            prompt: p
            qualty: low
        """, name="bad.yaml")
    with pytest.raises(api.ManifestError) as caught:
        api.validate(bad)
    found = {(p.where.line, p.field) for p in caught.value.problems}
    assert found == {(5, "tasks[0].qualty"), (3, "tasks[0].images")}
    with pytest.raises(api.ConfigError):
        api.validate(job, provider="no-such-provider")


def test_a_held_lock_is_a_typed_error(job: Path, sim) -> None:
    from pipeline.ledger.lock import RunLock
    from pipeline.ledger.store import default_path

    with RunLock(default_path(job), manifest=job), pytest.raises(api.LockHeld):
        api.run(job, base_url=sim.base_url)


def test_status_json_and_the_api_agree(job: Path, cli: Cli, sim) -> None:
    api.run(job, base_url=sim.base_url, limit=1)
    printed = json.loads(cli("status", str(job), "--json").stdout)
    status = api.status(job)
    assert printed["counts"] == dict(status.counts) and printed["never_run"] == status.never_run
