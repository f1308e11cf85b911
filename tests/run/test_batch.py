"""Batch mode's whole lifecycle through the CLI, against `imgedit simulate` in its own process.

Submit, exit, collect in a later run; kill -9 at each step of submitting and
collecting (made exact by the simulator's holds, not by timers), then run
again: no batch created twice, no task paid twice, each output written once.
Expiry, partial failure with hostile lines, and a mixed manifest whose
dall-e-2 tasks go live while the rest batch.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
from PIL import Image

from pipeline.config.models import Models
from tests.conftest import TEST_KEY, Cli, tiny_image, wait_until, write_manifest
from tests.run.batchsim import (
    Sim,
    cli_for,
    job,
    outputs,
    query,
    standalone,
    states,
    wait_ended,
)

N = 6


@pytest.fixture
def batch_sim() -> Iterator[Sim]:
    yield from standalone()


def run_json(cli: Cli, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict]:
    done = cli("run", "job.yaml", "--json", *args, env=env)
    assert done.stdout.strip(), done.stderr
    return done.returncode, json.loads(done.stdout)


def paid_once(sim: Sim, ids: list[str]) -> None:
    """Every task's line ran exactly once at the provider: nothing paid twice."""
    runs = sim.stats()["runs_by_custom_id"]
    by_task = {}
    for custom_id, count in runs.items():
        by_task[custom_id.rpartition("@")[0]] = by_task.get(custom_id.rpartition("@")[0], 0) + count
    assert by_task == {i: 1 for i in ids}


def test_submit_exits_then_a_later_run_collects(cli: Cli, batch_sim: Sim, tmp_path: Path,
                                                models: Models) -> None:
    ids = job(tmp_path, N)
    cli = cli_for(cli, batch_sim)
    code, summary = run_json(cli)
    assert code == 0, summary
    assert summary["batch"]["batched"] == N and summary["batch"]["batches_created"] == 1
    assert set(states(tmp_path).values()) == {"batched"}
    assert outputs(tmp_path, ids) == {}
    assert batch_sim.live_requests() == 0  # nothing went live

    wait_ended(batch_sim)
    code, summary = run_json(cli)
    assert code == 0, summary
    assert summary["batch"]["collected"] == {"succeeded": N}
    assert set(states(tmp_path).values()) == {"succeeded"}
    written = outputs(tmp_path, ids)
    assert set(written) == set(ids)
    sidecar = json.loads((tmp_path / "in" / "t00.edited.json").read_text())
    assert sidecar["batch"].startswith("batch_") and sidecar["fingerprint"]
    # Spend at the batch price: half of what the same usage costs live.
    costs = dict(query(tmp_path, "SELECT id, cost FROM tasks"))
    live = models.cost_from_usage("gpt-image-1", sidecar["usage"])
    assert costs["t00"] == pytest.approx(live / 2)
    assert summary["batch"]["saved"] == pytest.approx(sum(costs.values()), rel=1e-3)

    code, summary = run_json(cli)  # a third run: nothing to do, nothing created
    assert code == 0 and summary["sent"] == 0
    assert batch_sim.stats()["batches_created"] == 1
    assert outputs(tmp_path, ids) == written
    paid_once(batch_sim, ids)
    status = cli("status", "job.yaml")
    assert "succeeded 6" in status.stdout and "completed + 0 failed of 6" in status.stdout
    for path in tmp_path.rglob("*"):  # the key reached the gateway, and nothing else
        assert not path.is_file() or TEST_KEY.encode() not in path.read_bytes(), path


def test_status_collects_ended_batches(cli: Cli, batch_sim: Sim, tmp_path: Path) -> None:
    ids = job(tmp_path, 3)
    cli = cli_for(cli, batch_sim)
    assert cli("run", "job.yaml").returncode == 0
    wait_ended(batch_sim)
    done = cli("status", "job.yaml", "--json")
    report = json.loads(done.stdout)
    assert report["counts"]["succeeded"] == 3 and report["batches"][0]["collected"]
    assert set(outputs(tmp_path, ids)) == set(ids)


def test_wait_polls_until_every_batch_ended(cli: Cli, batch_sim: Sim, tmp_path: Path) -> None:
    ids = job(tmp_path, N)
    batch_sim.configure(seconds=1.0)
    done = cli_for(cli, batch_sim)("run", "job.yaml", "--wait")
    assert done.returncode == 0, done.stderr
    assert set(outputs(tmp_path, ids)) == set(ids)
    assert "batch mode saved $" in done.stdout


def kill_at(cli: Cli, sim: Sim, point: str, *args: str,
            before_kill: Callable[[], bool] | None = None) -> None:
    """Start a run, wait until the simulator holds it at `point`, kill -9 it, release."""
    sim.hold(point)
    proc = cli.popen("run", "job.yaml", *args)
    try:
        wait_until(lambda: sim.held(point) or proc.poll() is not None, f"a request at {point}")
        assert proc.poll() is None, proc.communicate()
        if before_kill:
            wait_until(before_kill, "the run to get that far")
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    finally:
        sim.release()


@pytest.mark.slow
@pytest.mark.parametrize("point", ["files.create", "batches.create"])
def test_kill_while_submitting_never_creates_a_second_batch(
        cli: Cli, batch_sim: Sim, tmp_path: Path, point: str) -> None:
    ids = job(tmp_path, N)
    cli = cli_for(cli, batch_sim)
    kill_at(cli, batch_sim, point)
    assert set(states(tmp_path).values()) == {"batched"}  # the intent came first
    created_by_killed_run = batch_sim.stats()["batches_created"]
    assert created_by_killed_run == (1 if point == "batches.create" else 0)

    code, summary = run_json(cli, "--wait")
    assert code == 0, summary
    assert batch_sim.stats()["batches_created"] == 1  # found again, or created once
    assert set(states(tmp_path).values()) == {"succeeded"}
    assert set(outputs(tmp_path, ids)) == set(ids)
    paid_once(batch_sim, ids)
    if point == "batches.create":
        assert any("found batch" in note for note in summary["batch"]["notes"])


@pytest.mark.slow
def test_kill_in_the_middle_of_collecting(cli: Cli, batch_sim: Sim, tmp_path: Path) -> None:
    ids = job(tmp_path, N)
    cli = cli_for(cli, batch_sim)
    assert cli("run", "job.yaml").returncode == 0
    wait_ended(batch_sim)

    def half_kept() -> bool:
        return list(states(tmp_path).values()).count("succeeded") == N // 2

    kill_at(cli, batch_sim, "files.content", before_kill=half_kept)
    before = outputs(tmp_path, ids)
    assert len(before) == N // 2

    code, summary = run_json(cli)
    assert code == 0, summary
    assert summary["batch"]["collected"] == {"succeeded": N - N // 2}
    assert any(f"{N // 2} line(s) already kept" in n for n in summary["batch"]["notes"])
    after = outputs(tmp_path, ids)
    assert set(after) == set(ids)
    assert {i: after[i] for i in before} == before  # those kept before the kill: not rewritten
    assert batch_sim.stats()["batches_created"] == 1
    paid_once(batch_sim, ids)
    attempts = dict(query(tmp_path, "SELECT id, attempts FROM tasks"))
    assert set(attempts.values()) == {1}


def test_an_expired_batch_sends_its_unfinished_tasks_again(cli: Cli, batch_sim: Sim,
                                                            tmp_path: Path) -> None:
    ids = job(tmp_path, N)
    cli = cli_for(cli, batch_sim)
    batch_sim.configure(seconds=0.2, expire=True)
    code, summary = run_json(cli, "--wait")
    assert code == 1  # half the tasks are not done
    assert summary["batch"]["collected"] == {"succeeded": N // 2}
    assert summary["batch"]["back_to_send"] == N - N // 2
    assert list(states(tmp_path).values()).count("pending") == N - N // 2

    batch_sim.configure(seconds=0.2)
    code, summary = run_json(cli, "--wait")
    assert code == 0, summary
    assert summary["batch"]["batched"] == N - N // 2
    assert set(outputs(tmp_path, ids)) == set(ids)
    assert batch_sim.stats()["batches_created"] == 2
    paid_once(batch_sim, ids)


def test_failed_unknown_and_hostile_lines(cli: Cli, batch_sim: Sim, tmp_path: Path) -> None:
    ids = job(tmp_path, 4)
    extra = "".join(f"  - id: {name}\n    images: in/t0{i}.png\n    prompt: {word} please\n"
                    f"    output: \"{{dir}}/{name}.{{ext}}\"\n"
                    for i, (name, word) in enumerate([("refused", "FAILME"),
                                                      ("hostile", "HOSTILE")]))
    write_manifest(tmp_path, (tmp_path / "job.yaml").read_text() + extra)
    batch_sim.configure(seconds=0.2, fail="FAILME", hostile="HOSTILE", unknown_custom_id=True)
    code, summary = run_json(cli_for(cli, batch_sim), "--wait")
    assert code == 1
    assert summary["batch"]["collected"] == {"succeeded": 4, "failed": 2}
    assert any("unknown custom_id" in note for note in summary["batch"]["notes"])
    rows = {r[0]: r[1:] for r in query(
        tmp_path, "SELECT id, state, terminal, error_code, reason FROM tasks")}
    assert rows["refused"][:3] == ("failed", 1, "moderation_blocked")
    assert rows["hostile"][:2] == ("failed", 0) and "no image" in rows["hostile"][3]
    assert not list(tmp_path.glob("in/hostile.*"))
    assert set(outputs(tmp_path, ids)) == set(ids)
    status = cli("status", "job.yaml").stdout
    assert "refused: failed (terminal)" in status and "hostile: failed (will retry)" in status
    # The unusable answer was billed: it counts, at the batch price, and a second one in a
    # row stops the task from being sent every night.
    assert summary["batch"]["spent"] > sum(
        c for (c,) in query(tmp_path, "SELECT cost FROM tasks WHERE state = 'succeeded'"))
    code, summary = run_json(cli_for(cli, batch_sim), "--wait")
    assert code == 1 and summary["batch"]["batched"] == 1
    state, terminal = query(tmp_path, "SELECT state, terminal FROM tasks WHERE id = 'hostile'")[0]
    assert (state, terminal) == ("failed", 1)


def test_mixed_manifest_dalle2_goes_live_the_rest_batches(cli: Cli, batch_sim: Sim,
                                                          tmp_path: Path) -> None:
    ids = job(tmp_path, 3)
    tiny_image(tmp_path / "sq" / "d0.png", (10, 20, 30))
    tiny_image(tmp_path / "sq" / "d1.png", (30, 20, 10))
    extra = "".join(f"  - id: {d}\n    images: sq/{d}.png\n    prompt: Make it blue\n"
                    "    model: dall-e-2\n    quality: standard\n" for d in ("d0", "d1"))
    write_manifest(tmp_path, (tmp_path / "job.yaml").read_text() + extra)
    code, summary = run_json(cli_for(cli, batch_sim), "--wait")
    assert code == 0, summary
    assert summary["succeeded"] == 2 and summary["batch"]["batched"] == 3
    assert batch_sim.live_requests() == 2  # exactly the dall-e-2 tasks went live
    assert set(batch_sim.stats()["runs_by_custom_id"]) == {
        c for c in batch_sim.stats()["runs_by_custom_id"] if c.split("@")[0] in ids}
    assert set(states(tmp_path).values()) == {"succeeded"}
    costs = dict(query(tmp_path, "SELECT id, cost FROM tasks"))
    assert costs["d0"] == pytest.approx(0.02)  # dall-e-2 1024x1024 at the live price


def test_max_cost_and_estimate_count_batch_prices(cli: Cli, batch_sim: Sim,
                                                  tmp_path: Path) -> None:
    job(tmp_path, 40)
    cli = cli_for(cli, batch_sim)

    def estimate(*args: str) -> float:
        line = cli("run", "job.yaml", "--dry-run", *args).stdout
        return float(line.split("estimated cost $")[1].split()[0])

    at_batch = estimate()
    assert "at batch prices" in cli("run", "job.yaml", "--dry-run").stdout
    write_manifest(tmp_path, (tmp_path / "job.yaml").read_text().replace(", batch: true", ""))
    live = estimate()
    assert at_batch == pytest.approx(live / 2, abs=0.01)
    budget = str(round((live + at_batch) / 2, 2))  # above the batch price, under the live one
    refused = cli("run", "job.yaml", "--max-cost", budget)
    assert refused.returncode == 2 and "above --max-cost" in refused.stderr
    code, summary = run_json(cli, "--max-cost", budget, "--batch")
    assert code == 0 and summary["batch"]["batched"] == 40


def test_a_provider_without_a_batch_api_is_refused(cli: Cli, tmp_path: Path) -> None:
    job(tmp_path, 1)
    done = cli("run", "job.yaml", "--provider", "wenwen")
    assert done.returncode == 2 and "has no Batch API" in done.stderr


def test_in_process_simulator_waits_for_its_batches(cli: Cli, tmp_path: Path) -> None:
    ids = job(tmp_path, 3)
    code, summary = run_json(cli)  # provider simulator, started in this run
    assert code == 0, summary
    assert summary["batch"]["collected"] == {"succeeded": 3}
    assert set(outputs(tmp_path, ids)) == set(ids)


def test_a_cancelled_batch_puts_its_unrun_tasks_back_to_send(cli: Cli, batch_sim: Sim,
                                                            tmp_path: Path) -> None:
    ids = job(tmp_path, N)
    cli = cli_for(cli, batch_sim)
    batch_sim.configure(seconds=30)
    assert cli("run", "job.yaml").returncode == 0
    (batch,) = batch_sim.batches()
    batch_sim.call("POST", f"/v1/batches/{batch['id']}/cancel")
    wait_ended(batch_sim)
    ran = batch_sim.stats()["lines_run"]
    assert ran < N

    batch_sim.configure(seconds=0.2)
    code, summary = run_json(cli, "--wait")  # collects, then sends the rest in a new batch
    assert code == 0, summary
    assert summary["batch"]["back_to_send"] == N - ran
    assert summary["batch"]["batched"] == N - ran
    assert set(outputs(tmp_path, ids)) == set(ids)
    assert batch_sim.stats()["batches_created"] == 2
    paid_once(batch_sim, ids)


def test_a_batch_sent_to_another_gateway_is_left_alone(cli: Cli, batch_sim: Sim,
                                                       tmp_path: Path) -> None:
    ids = job(tmp_path, 3)
    cli = cli_for(cli, batch_sim)
    assert cli("run", "job.yaml").returncode == 0
    wait_ended(batch_sim)
    elsewhere = batch_sim.url.replace("127.0.0.1", "localhost")
    code, summary = run_json(cli, env={"IMGEDIT_BASE_URL": elsewhere})
    assert code == 0, summary
    assert any("a run against that gateway collects it" in n for n in summary["batch"]["notes"])
    assert set(states(tmp_path).values()) == {"batched"}  # not sent again, not given up
    assert batch_sim.stats()["batches_created"] == 1 and batch_sim.live_requests() == 0
    del cli.env["IMGEDIT_BASE_URL"]  # the in-process simulator: it must not take them for its own
    assert "(--base-url or IMGEDIT_BASE_URL) collects it" in cli("status", "job.yaml").stderr
    code, summary = run_json(cli)
    assert code == 0 and summary["sent"] == 0
    assert set(states(tmp_path).values()) == {"batched"}
    cli.env["IMGEDIT_BASE_URL"] = batch_sim.url
    code, summary = run_json(cli)
    assert summary["batch"]["collected"] == {"succeeded": 3}
    assert set(outputs(tmp_path, ids)) == set(ids)


@pytest.mark.slow
def test_ctrl_c_while_waiting_leaves_the_batch_for_the_next_run(cli: Cli, batch_sim: Sim,
                                                               tmp_path: Path) -> None:
    ids = job(tmp_path, N)
    cli = cli_for(cli, batch_sim)
    batch_sim.configure(seconds=3)
    proc = cli.popen("run", "job.yaml", "--wait")
    def waiting() -> bool:  # a status only a poll of the waiting loop records
        try:
            return bool(query(tmp_path, "SELECT id FROM batches WHERE status = 'in_progress'"))
        except sqlite3.OperationalError:  # the ledger is being created
            return False

    wait_until(waiting, "the run to wait")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    wait_ended(batch_sim)
    code, summary = run_json(cli)
    assert code == 0 and summary["batch"]["collected"] == {"succeeded": N}
    assert set(outputs(tmp_path, ids)) == set(ids)
    paid_once(batch_sim, ids)


def test_an_answer_written_but_not_recorded_is_not_written_again(cli: Cli, batch_sim: Sim,
                                                                 tmp_path: Path) -> None:
    """The state a kill -9 leaves between writing a batch answer's files and recording its
    success: outputs and sidecar on disk, the task still `batched`, the batch not collected."""
    ids = job(tmp_path, 3)
    cli = cli_for(cli, batch_sim)
    assert cli("run", "job.yaml").returncode == 0
    wait_ended(batch_sim)
    assert cli("run", "job.yaml").returncode == 0
    written = outputs(tmp_path, ids)
    with closing(sqlite3.connect(tmp_path / "job.ledger.sqlite")) as db, db:
        db.execute("UPDATE tasks SET state = 'batched', outputs = '[]' WHERE id = 't01'")
        db.execute("UPDATE batches SET collected_at = NULL")
    code, summary = run_json(cli)
    assert code == 0, summary
    assert summary["batch"]["collected"] == {"found on disk": 1}
    assert outputs(tmp_path, ids) == written
    assert states(tmp_path)["t01"] == "succeeded"


def test_a_large_image_goes_as_an_uploaded_file_id(cli: Cli, batch_sim: Sim,
                                                   tmp_path: Path) -> None:
    ids = job(tmp_path, 1)
    noise = Image.frombytes("RGB", (1400, 1400), random.Random(3).randbytes(1400 * 1400 * 3))
    noise.save(tmp_path / "in" / "t00.png")
    assert (tmp_path / "in" / "t00.png").stat().st_size > 4 * 1024 * 1024
    code, summary = run_json(cli_for(cli, batch_sim), "--wait")
    assert code == 0, summary
    assert batch_sim.stats()["files_uploaded"] == 2  # the image, then the batch's file
    assert set(outputs(tmp_path, ids)) == set(ids)


def test_a_create_whose_answer_is_lost_is_found_by_the_next_run(cli: Cli, batch_sim: Sim,
                                                                tmp_path: Path) -> None:
    ids = job(tmp_path, 3)
    cli = cli_for(cli, batch_sim)
    batch_sim.configure(seconds=0.2, drop_create=True)
    code, summary = run_json(cli, "--wait")
    assert code == 1  # its tasks are neither done nor given up
    assert any("no answer" in note for note in summary["batch"]["notes"])
    assert set(states(tmp_path).values()) == {"batched"}
    assert query(tmp_path, "SELECT id, status FROM batches") == [(None, "submitting")]

    batch_sim.configure(seconds=0.2)
    wait_ended(batch_sim)
    code, summary = run_json(cli)
    assert code == 0, summary
    assert any("found batch" in note for note in summary["batch"]["notes"])
    assert summary["batch"]["collected"] == {"succeeded": 3}
    assert batch_sim.stats()["batches_created"] == 1
    assert set(outputs(tmp_path, ids)) == set(ids)
    paid_once(batch_sim, ids)
