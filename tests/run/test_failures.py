"""Every failure the gateway can throw at a run, through the real CLI and the simulator.

Each test reads three witnesses: the exit code and summary, the ledger (SQLite:
tasks, attempts), and the simulator's own counters of what reached it. No
backoff sleeps (the cli fixture sets IMGEDIT_RETRY_WAIT_SCALE=0); where a test
must catch a run in flight it polls the simulator's counters with a deadline.
"""

from __future__ import annotations

import json
import queue
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import pytest
from PIL import Image

from pipeline.ledger.fingerprint import idempotency_key
from pipeline.simulator.app import SimulatorOptions, SimulatorStats, SimulatorThread
from tests.conftest import TEST_KEY, Cli, tiny_image, wait_until, write_manifest

Simulator = Callable[..., SimulatorThread]


# --- helpers --------------------------------------------------------------------------------

def write_job(folder: Path, tasks: list[tuple[str, str]], *, concurrency: int = 4) -> Path:
    """A manifest of (id, prompt) tasks, each over its own tiny PNG (identical bytes, so the
    simulator renders each prompt once and answers the rest from its cache)."""
    lines = ["version: 1",
             "defaults: {model: gpt-image-1, quality: low, size: 1024x1024}",
             f"limits: {{rate: unlimited, concurrency: {concurrency}}}",
             "tasks:"]
    for task_id, prompt in tasks:
        tiny_image(folder / "in" / f"{task_id}.png")
        lines += [f"  - id: {task_id}", f"    images: in/{task_id}.png",
                  f"    prompt: {json.dumps(prompt)}"]
    return write_manifest(folder, "\n".join(lines) + "\n")


def numbered(count: int, prompt: str = "Put it on white") -> list[tuple[str, str]]:
    return [(f"t{i:02d}", prompt) for i in range(count)]


def query(folder: Path, sql: str, *params: Any) -> list[sqlite3.Row]:
    with closing(sqlite3.connect(folder / "job.ledger.sqlite")) as db:
        db.row_factory = sqlite3.Row
        return db.execute(sql, params).fetchall()


def task(folder: Path, task_id: str) -> sqlite3.Row:
    (row,) = query(folder, "SELECT * FROM tasks WHERE id = ?", task_id)
    return row


def attempts(folder: Path, task_id: str) -> list[sqlite3.Row]:
    return query(folder, "SELECT * FROM attempts WHERE task_id = ? ORDER BY id", task_id)


def states(folder: Path) -> dict[str, str]:
    return {r["id"]: r["state"] for r in query(folder, "SELECT id, state FROM tasks")}


def keys(folder: Path) -> dict[str, str]:
    """task id -> the Idempotency-Key it sends, as the simulator counts it."""
    rows = query(folder, "SELECT id, fingerprint FROM tasks")
    return {r["id"]: idempotency_key(r["id"], r["fingerprint"]) for r in rows}


def assert_consistent(folder: Path) -> None:
    """No task left `submitted`, and SQLite finds the file whole."""
    assert query(folder, "SELECT id FROM tasks WHERE state = 'submitted'") == []
    assert query(folder, "PRAGMA integrity_check")[0][0] == "ok"


@contextmanager
def background(cli: Cli, *args: str,
               env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    """A run in a child process; killed at the end if a failed assertion left it running."""
    proc = cli.popen(*args, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def first_line_with(stream: IO[str], text: str, timeout: float = 10.0) -> str:
    """Read a child's pipe up to the first line containing `text`; a thread does the reading,
    so the deadline holds even if the child goes quiet. The rest is left for communicate()."""
    found: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in iter(stream.readline, ""):
            if text in line:
                break
        else:
            line = ""  # the child closed the pipe first
        found.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        line = found.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no line with {text!r} within {timeout}s") from None
    assert line, f"the run ended without printing {text!r}"
    return line


def started(row: sqlite3.Row) -> float:
    return datetime.fromisoformat(row["started_at"]).timestamp()


# --- one test per fault class ---------------------------------------------------------------
#
# One run holds a task per fault class: the simulator gives each task's first attempt its
# fault (fault_by_prompt with counts), or every attempt for faults that are terminal. Each
# test below then reads its own task's rows; one CLI run instead of a dozen keeps this fast.

# fault -> the first attempt's (HTTP status, error_type, outcome) in the ledger.
RETRIED = {
    "500": (500, "server_error", "retry"),
    "502": (502, "bad_gateway", "retry"),
    "503": (503, "overloaded", "retry"),
    "504": (504, "timeout", "unknown"),  # the relay never retries it: maybe billed upstream
    "html502": (502, "http_502", "retry"),
    "429": (429, "rate_limit_exceeded", "retry"),
    "429-bare": (429, "rate_limit_exceeded", "retry"),
    "drop": (None, "unknown_outcome", "unknown"),  # upload done, no answer: maybe billed
    "malformed": (200, "bad_response", "retry"),  # answered (so perhaps billed), unusable
    "notimage": (200, "bad_response", "retry"),
}
# fault -> (HTTP status, error_code, words of the server's message kept as the reason)
TERMINAL = {
    "moderation": (400, "moderation_blocked", "rejected by the safety system"),
    "convert": (500, "convert_request_failed", "failed to convert request"),
}


@dataclass(frozen=True)
class FaultRun:
    folder: Path
    code: int
    summary: dict[str, Any]
    stats: SimulatorStats
    keys: dict[str, str]


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory: pytest.TempPathFactory) -> FaultRun:
    folder = tmp_path_factory.mktemp("faults")
    by_prompt: dict[str, Any] = {f"[{f}]": {f: 1} for f in RETRIED}
    by_prompt |= {f"[{f}]": f for f in TERMINAL}
    write_job(folder, [(f"task-{f}", f"Put it on white [{f}]") for f in [*RETRIED, *TERMINAL]])
    with SimulatorThread(SimulatorOptions(fault_by_prompt=by_prompt, api_key=TEST_KEY)) as sim:
        code, summary = Cli(folder).json("run", "job.yaml", "--base-url", sim.base_url)
        return FaultRun(folder, code, summary, sim.stats(), keys(folder))


@pytest.mark.parametrize("fault", list(RETRIED))
def test_a_retryable_fault_is_retried_then_succeeds(fault_run: FaultRun, fault: str) -> None:
    folder, task_id = fault_run.folder, f"task-{fault}"
    status, error_type, outcome = RETRIED[fault]
    row = task(folder, task_id)
    assert (row["state"], row["terminal"], row["reason"], row["attempts"]) == (
        "succeeded", 0, None, 2)
    first, second = attempts(folder, task_id)
    assert (first["number"], first["status"], first["error_type"], first["outcome"]) == (
        1, status, error_type, outcome)
    assert first["message"]
    if status == 200:  # an unusable answer still names its request, for the gateway's support
        assert first["request_id"].startswith("req_")
    assert (second["number"], second["status"], second["outcome"]) == (2, 200, "succeeded")
    assert second["request_id"].startswith("req_")
    key = fault_run.keys[task_id]
    assert fault_run.stats.by_key[key] == 2  # one ledger row per HTTP attempt, same key
    assert fault_run.stats.succeeded_by_key[key] == 1
    assert fault_run.stats.faults[fault] == 1
    sidecar = json.loads((folder / f"in/{task_id}.edited.json").read_text())
    assert sidecar["attempts"] == 2
    with Image.open(folder / f"in/{task_id}.edited.png") as image:
        image.load()


@pytest.mark.parametrize("fault", list(TERMINAL))
def test_a_terminal_answer_is_recorded_and_not_retried(fault_run: FaultRun, fault: str) -> None:
    folder, task_id = fault_run.folder, f"task-{fault}"
    status, code, words = TERMINAL[fault]
    row = task(folder, task_id)
    assert (row["state"], row["terminal"], row["error_code"]) == ("failed", 1, code)
    assert words in row["reason"]
    (only,) = attempts(folder, task_id)
    assert (only["status"], only["error_code"], only["outcome"]) == (status, code, "failed")
    assert fault_run.stats.by_key[fault_run.keys[task_id]] == 1
    assert {"id": task_id, "reason": row["reason"]} in fault_run.summary["failures"]
    assert not (folder / f"in/{task_id}.edited.png").exists()


def test_the_fault_run_is_counted_in_the_summary_and_the_ledger(fault_run: FaultRun) -> None:
    summary = fault_run.summary
    assert fault_run.code == 1  # finished, two tasks failed
    assert (summary["succeeded"], summary["failed"], summary["unknown"]) == (
        len(RETRIED), len(TERMINAL), 0)
    assert summary["retries"] == {
        "server_error": 1, "bad_gateway": 1, "overloaded": 1, "timeout": 1, "http_502": 1,
        "rate_limit_exceeded": 2, "unknown_outcome": 1, "bad_response": 2}
    # The dropped one, and the two unusable 200s (malformed, notimage): each may have been
    # billed, then sent again and billed for its good answer.
    assert summary["possible_double_charges"] == 3
    assert fault_run.stats.requests == 2 * len(RETRIED) + len(TERMINAL) == summary["requests"]
    assert len(query(fault_run.folder, "SELECT id FROM attempts")) == fault_run.stats.requests
    assert_consistent(fault_run.folder)


def test_a_slow_answer_past_the_timeout_is_unknown_then_retried(tmp_path: Path, cli: Cli,
                                                                simulator: Simulator) -> None:
    # The slow answer never comes while the test lasts; the timeout leaves the good answer
    # seconds, not milliseconds, so a loaded machine does not turn it into a second timeout.
    sim = simulator(fail_first={"slow": 1}, slow_seconds=600)
    write_job(tmp_path, [("sku", "Put it on white")])
    code, summary = cli.json("run", "job.yaml", "--base-url", sim.base_url, "--timeout", "3")
    assert code == 0, summary
    first, second = attempts(tmp_path, "sku")
    assert (first["status"], first["error_type"], first["outcome"]) == (
        None, "unknown_outcome", "unknown")
    assert "no answer within 3 s" in first["message"]
    assert second["outcome"] == "succeeded"
    assert task(tmp_path, "sku")["state"] == "succeeded"
    assert summary["possible_double_charges"] == 1
    assert sim.stats().by_key == {keys(tmp_path)["sku"]: 2}


# --- early abort ----------------------------------------------------------------------------

@pytest.mark.parametrize(("fault", "status", "code", "words", "advice"), [
    ("401", 401, "invalid_api_key", "Incorrect API key", "check the API key"),
    ("quota", 429, "insufficient_quota", "exceeded your current quota",
     "top up the account's quota"),
])
def test_a_fatal_answer_aborts_the_run(tmp_path: Path, cli: Cli, simulator: Simulator,
                                       fault: str, status: int, code: str, words: str,
                                       advice: str) -> None:
    """t08's answer says no task can succeed: the run stops launching, lets what is in
    flight finish, exits 3 and says what to do."""
    concurrency = 4
    tasks = numbered(16)
    # t08 goes second: among the first requests taken.
    tasks[1], tasks[8] = ("t08", "Put it on white KEY-REVOKED-HERE"), tasks[1]
    sim = simulator(fault_by_prompt={"KEY-REVOKED-HERE": fault}, latency=0.05)
    write_job(tmp_path, tasks, concurrency=concurrency)
    done = cli("run", "job.yaml", "--base-url", sim.base_url, "--json")
    assert done.returncode == 3, done.stderr
    assert words in done.stderr and f"what to do: {advice}" in done.stderr

    stats = sim.stats()
    # No request started after the run saw t08's answer (events in order, not a count that
    # depends on how fast a loaded machine reads answers).
    (fatal,) = attempts(tmp_path, "t08")
    seen = datetime.fromisoformat(fatal["started_at"]).timestamp() + fatal["latency_s"]
    started = [datetime.fromisoformat(r["started_at"]).timestamp()
               for r in query(tmp_path, "SELECT started_at FROM attempts")]
    assert max(started) <= seen + 0.001
    assert stats.faults == {fault: 1}
    assert stats.by_key[keys(tmp_path)["t08"]] == 1  # a fatal answer is not retried
    # The task is fine, the account is not: no terminal failure, it runs once that is fixed.
    row = task(tmp_path, "t08")
    assert (row["state"], row["terminal"], row["error_code"]) == ("failed", 0, code)
    assert words in row["reason"]
    (only,) = attempts(tmp_path, "t08")
    assert (only["status"], only["outcome"]) == (status, "aborted")
    assert_consistent(tmp_path)
    found = states(tmp_path)
    del found["t08"]
    assert set(found.values()) <= {"succeeded"}  # those in flight finished
    assert len(found) == stats.succeeded
    summary = json.loads(done.stdout)
    assert summary["not_started"] == 16 - 1 - stats.succeeded > 0
    assert "the gateway refused the run" in summary["stopped"]


def test_a_task_whose_answer_was_lost_stays_unknown_when_the_run_stops(
        tmp_path: Path, cli: Cli, simulator: Simulator) -> None:
    """`lost`'s connection drops after the upload; by then `key` met a 401 and the run is
    stopping, so `lost` is not retried. It may have been billed: unknown, not failed, so
    --no-retry-unknown holds it on the next run."""
    sim = simulator(fault_by_prompt={"[lost]": {"drop": 1}, "[key]": "401"}, latency=0.5)
    write_job(tmp_path, [("lost", "Put it on white [lost]"), ("key", "Put it on white [key]")],
              concurrency=2)
    assert cli("run", "job.yaml", "--base-url", sim.base_url).returncode == 3
    row = task(tmp_path, "lost")
    assert row["state"] == "unknown", row["reason"]
    assert "connection lost" in row["reason"] and "not retried" in row["reason"]
    assert sim.stats().by_key[keys(tmp_path)["lost"]] == 1

    fixed = simulator()  # a good key now; `lost` stays held as asked
    code, summary = cli.json("run", "job.yaml", "--base-url", fixed.base_url,
                             "--no-retry-unknown")
    assert (code, summary["sent"], summary["plan"]) == (1, 1, {"retry": 1, "unknown": 1})
    assert set(fixed.stats().by_key) == {keys(tmp_path)["key"]}


# --- shared cooldown ------------------------------------------------------------------------

def test_a_429_pauses_every_worker_for_the_servers_wait(tmp_path: Path, cli: Cli,
                                                        simulator: Simulator) -> None:
    """`hot` meets a 429 saying Retry-After: 1s (scaled to 0.4 s here). A request already
    on the wire (n1) finishes; no worker starts a new one until the pause is over."""
    sim = simulator(fault_by_prompt={"HOT": "429"}, latency=0.2)
    write_job(tmp_path, [("hot", "HOT seller"), ("n1", "a"), ("n2", "b"), ("n3", "c")],
              concurrency=2)
    done = cli("run", "job.yaml", "--base-url", sim.base_url, "--retries", "0",
               env={"IMGEDIT_RETRY_WAIT_SCALE": "0.4"})
    assert done.returncode == 1, done.stderr  # hot failed (no retries left); the rest passed
    assert states(tmp_path) == {"hot": "failed", "n1": "succeeded", "n2": "succeeded",
                                "n3": "succeeded"}
    (refused,) = attempts(tmp_path, "hot")
    assert refused["status"] == 429
    answered_429 = started(refused) + refused["latency_s"]
    assert started(attempts(tmp_path, "n1")[0]) < answered_429  # was on the wire already
    for later in ("n2", "n3"):
        (attempt,) = attempts(tmp_path, later)
        assert started(attempt) >= answered_429 + 0.4 - 0.02, later  # 20 ms clock slack
    assert sim.stats().requests == 4


# --- unknown outcomes -----------------------------------------------------------------------

def test_no_retry_unknown_holds_tasks_that_may_have_been_billed(tmp_path: Path, cli: Cli,
                                                                simulator: Simulator) -> None:
    sim = simulator(fail_first={"drop": 1})
    write_job(tmp_path, [("a", "Put it on white"), ("b", "Put it on white")])
    code, summary = cli.json("run", "job.yaml", "--base-url", sim.base_url, "--no-retry-unknown")
    assert code == 1
    assert (summary["unknown"], summary["succeeded"], summary["failed"]) == (2, 0, 0)
    assert summary["possible_double_charges"] == 0  # held, so nothing was paid twice
    for task_id in ("a", "b"):
        row = task(tmp_path, task_id)
        assert row["state"] == "unknown" and "connection lost" in row["reason"]
        assert [a["outcome"] for a in attempts(tmp_path, task_id)] == ["unknown"]
    assert sim.stats().requests == 2

    # Held again by the next run that says so (a cron line keeps its flags)...
    code, summary = cli.json("run", "job.yaml", "--base-url", sim.base_url, "--no-retry-unknown")
    assert (code, summary["sent"], summary["plan"]) == (1, 0, {"unknown": 2})
    assert sim.stats().requests == 2
    # ...and re-sent when asked: each is a possible double charge, and the summary says so.
    code, summary = cli.json("run", "job.yaml", "--base-url", sim.base_url)
    assert (code, summary["sent"], summary["succeeded"]) == (0, 2, 2)
    assert summary["possible_double_charges"] == 2
    assert sim.stats().requests == 4
    assert set(states(tmp_path).values()) == {"succeeded"}


# --- terminal failures and reprocessing -----------------------------------------------------

def test_terminal_failures_wait_for_retry_failed_or_only_failed(
        tmp_path: Path, cli: Cli, simulator: Simulator) -> None:
    sim = simulator(fault_by_prompt={"BLOCKED": "moderation"})
    manifest = write_job(tmp_path, [("ok", "Put it on white"), ("bad1", "BLOCKED one"),
                                    ("bad2", "BLOCKED two")])
    code, summary = cli.json("run", "job.yaml", "--base-url", sim.base_url)
    assert (code, summary["succeeded"], summary["failed"]) == (1, 1, 2)
    assert "--only-failed" in summary["reprocess"]
    for bad in ("bad1", "bad2"):
        row = task(tmp_path, bad)
        assert (row["state"], row["terminal"]) == ("failed", 1)
        assert "safety system" in row["reason"]
    key = keys(tmp_path)

    # A plain re-run does not pay again for what the server refused.
    code, summary = cli.json("run", "job.yaml", "--base-url", sim.base_url)
    assert (code, summary["sent"], summary["plan"]) == (1, 0, {"done": 1, "failed": 2})
    assert sim.stats().requests == 3

    # --only-failed: the failed ones, not the new task added meanwhile.
    tiny_image(tmp_path / "in/late.png")
    manifest.write_text(manifest.read_text()
                        + "  - id: late\n    images: in/late.png\n    prompt: Put it on white\n")
    code, summary = cli.json("run", "job.yaml", "--base-url", sim.base_url, "--only-failed")
    assert (code, summary["sent"], summary["failed"]) == (1, 2, 2)
    assert sim.stats().by_key == {key["ok"]: 1, key["bad1"]: 2, key["bad2"]: 2}

    # --retry-failed: the usual work (here `late`) plus the terminal failures.
    fixed = simulator()  # say the prompts were cleared with the provider
    code, summary = cli.json("run", "job.yaml", "--base-url", fixed.base_url, "--retry-failed")
    assert (code, summary["sent"], summary["succeeded"]) == (0, 3, 3)
    assert set(fixed.stats().by_key) == {key["bad1"], key["bad2"], keys(tmp_path)["late"]}
    assert set(states(tmp_path).values()) == {"succeeded"}


# --- the run lock ---------------------------------------------------------------------------

def test_a_second_run_of_the_same_manifest_exits_75_at_once(tmp_path: Path, cli: Cli,
                                                            simulator: Simulator) -> None:
    sim = simulator(latency=10)
    write_job(tmp_path, numbered(2))
    with background(cli, "run", "job.yaml", "--base-url", sim.base_url, "--grace", "0") as first:
        wait_until(lambda: sim.stats().in_flight == 2, "the first run's requests")
        second = cli("run", "job.yaml", "--base-url", sim.base_url, timeout=5)
        assert second.returncode == 75
        assert f"job.yaml is in progress (pid {first.pid}); wait for it or stop it" in (
            second.stderr)
        assert "wait for it or stop it" in second.stderr
        assert sim.stats().requests == 2  # the second run sent nothing
        assert first.poll() is None  # refused while the first still runs
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=5) == 130


# --- signals --------------------------------------------------------------------------------

@pytest.mark.slow  # SIGTERM scenario
def test_sigterm_lets_requests_in_flight_finish_and_a_rerun_does_the_rest(
        tmp_path: Path, cli: Cli, simulator: Simulator) -> None:
    # A second per answer: after the first three, the other nine need three more rounds,
    # so the signal lands seconds, not milliseconds, before the run could end by itself.
    sim = simulator(latency=1.0)
    write_job(tmp_path, numbered(12), concurrency=3)
    with background(cli, "run", "job.yaml", "--base-url", sim.base_url, "--grace", "10") as run:
        wait_until(lambda: sim.stats().succeeded >= 3 and sim.stats().in_flight > 0,
                   "some tasks done and some in flight")
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=10)
    assert run.returncode == 143, err
    assert "SIGTERM: no new requests" in err
    first = sim.stats()
    assert first.in_flight == 0
    assert_consistent(tmp_path)
    # Within the grace every request in flight got its answer and was saved.
    done = {k for k, v in states(tmp_path).items() if v == "succeeded"}
    assert set(states(tmp_path).values()) == {"succeeded"}
    assert {keys(tmp_path)[t] for t in done} == set(first.succeeded_by_key)
    assert 3 <= len(done) < 12

    code, summary = cli.json("run", "job.yaml", "--base-url", sim.base_url)
    assert (code, summary["sent"]) == (0, 12 - len(done))
    second = sim.stats()
    for key, count in first.succeeded_by_key.items():
        assert (count, second.by_key[key]) == (1, first.by_key[key])  # not sent again
    assert second.requests == 12
    assert set(states(tmp_path).values()) == {"succeeded"}
    assert_consistent(tmp_path)


def test_a_signal_wakes_tasks_waiting_to_retry(tmp_path: Path, cli: Cli,
                                               simulator: Simulator) -> None:
    """With real backoff (10-20 s here) a SIGTERM must not wait out the sleep, nor the grace:
    nothing is in flight, so the run stops now and records the task's last answer."""
    sim = simulator(fail_first={"500": 1})
    write_job(tmp_path, [("sku", "Put it on white")])
    with background(cli, "run", "job.yaml", "--base-url", sim.base_url, "--grace", "20",
                    env={"IMGEDIT_RETRY_WAIT_SCALE": "10"}) as run:
        wait_until(lambda: sim.stats().faults == {"500": 1}, "the first attempt's 500")
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=5)
    assert run.returncode == 143, err
    assert_consistent(tmp_path)
    row = task(tmp_path, "sku")
    assert (row["state"], row["terminal"]) == ("failed", 0)
    assert "not retried" in row["reason"] and "HTTP 500" in row["reason"]
    assert sim.stats().requests == 1
    code, _ = cli.json("run", "job.yaml", "--base-url", sim.base_url)
    assert code == 0 and task(tmp_path, "sku")["state"] == "succeeded"


def test_sigint_after_the_grace_cancels_and_records_unknown(tmp_path: Path, cli: Cli,
                                                            simulator: Simulator) -> None:
    sim = simulator(latency=10)  # answers would come long after the grace
    write_job(tmp_path, numbered(3), concurrency=3)
    with background(cli, "run", "job.yaml", "--base-url", sim.base_url, "--grace", "0.3") as run:
        wait_until(lambda: sim.stats().in_flight == 3, "three requests in flight")
        run.send_signal(signal.SIGINT)
        _, err = run.communicate(timeout=5)  # the grace, not the 10 s answers
    assert run.returncode == 130, err
    assert "waiting up to 0.3s" in err
    assert_consistent(tmp_path)
    for task_id in ("t00", "t01", "t02"):
        row = task(tmp_path, task_id)
        assert row["state"] == "unknown" and "may have been billed" in row["reason"]
        (attempt,) = attempts(tmp_path, task_id)
        assert (attempt["error_type"], attempt["outcome"]) == ("cancelled", "unknown")


def test_a_second_signal_stops_at_once(tmp_path: Path, cli: Cli, simulator: Simulator) -> None:
    sim = simulator(latency=10)
    write_job(tmp_path, numbered(2), concurrency=2)
    with background(cli, "run", "job.yaml", "--base-url", sim.base_url) as run:  # grace 30 s
        wait_until(lambda: sim.stats().in_flight == 2, "two requests in flight")
        run.send_signal(signal.SIGTERM)
        assert run.stderr is not None
        note = first_line_with(run.stderr, "SIGTERM: no new requests")
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=5)
    assert note.startswith("SIGTERM: no new requests; waiting up to 30s")
    assert run.returncode == 143, err
    assert_consistent(tmp_path)
    assert set(states(tmp_path).values()) == {"unknown"}
