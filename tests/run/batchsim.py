"""`imgedit simulate` in its own process, and the test's hand on its Batch API.

The in-process simulator ends with the run that started it, and a batch with
it: batch mode's lifecycle (submit, exit, collect in a later run) needs a
gateway that outlives each run, as the provider does.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, TEST_KEY, Cli, tiny_image, wait_until, write_manifest


class Sim:
    def __init__(self, proc: subprocess.Popen[str], url: str):
        self.proc, self.url = proc, url  # url: http://127.0.0.1:PORT/v1
        self.root = url.removesuffix("/v1")

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.root}{path}", data=data, method=method,
            headers={"Authorization": f"Bearer {TEST_KEY}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def configure(self, **options: Any) -> None:
        self.call("POST", "/_sim/batch", options)

    def stats(self) -> dict[str, Any]:
        return dict(self.call("GET", "/_sim/batch"))

    def batches(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/v1/batches?limit=100")["data"])

    def all_ended(self) -> bool:
        ended = ("completed", "failed", "expired", "cancelled")
        return all(b["status"] in ended for b in self.batches())

    def hold(self, point: str) -> None:
        self.call("POST", "/_sim/hold", {"point": point})

    def held(self, point: str) -> bool:
        return bool(self.call("GET", "/_sim/held").get(point))

    def release(self) -> None:
        self.call("POST", "/_sim/release", {})

    def live_requests(self) -> int:
        return int(self.call("GET", "/_sim/stats")["requests"])


def standalone() -> Iterator[Sim]:
    """`imgedit simulate --port 0` until the generator closes (a fixture's body)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "simulate", "--port", "0"], cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={"PYTHONPATH": str(ROOT),
                                                              "PATH": "/usr/bin:/bin",
                                                              "IMGEDIT_API_KEY": TEST_KEY})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening on" in line, line + (proc.stderr.read() if proc.stderr else "")
    sim = Sim(proc, line.split()[-1])
    sim.configure(seconds=0.2)
    try:
        yield sim
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def job(folder: Path, count: int, *, prompt: str = "Put the product on a white background",
        extra: str = "") -> list[str]:
    """A manifest of `count` gpt-image-1 tasks (t00, t01, ...) in batch mode."""
    lines = ["version: 1", "provider: simulator",
             "defaults: {model: gpt-image-1, quality: low, size: 1024x1024}",
             "limits: {rate: unlimited, retries: 0, batch: true}", "tasks:"]
    ids = [f"t{i:02d}" for i in range(count)]
    for i, task_id in enumerate(ids):
        tiny_image(folder / "in" / f"{task_id}.png", (9 * i, 90, 200 - 5 * i))
        lines += [f"  - id: {task_id}", f"    images: in/{task_id}.png",
                  f"    prompt: {prompt} {task_id}"]
    write_manifest(folder, "\n".join(lines) + "\n" + extra)
    return ids


def cli_for(cli: Cli, sim: Sim) -> Cli:
    cli.env["IMGEDIT_BASE_URL"] = sim.url
    return cli


def query(folder: Path, sql: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(folder / "job.ledger.sqlite")) as db:
        return db.execute(sql).fetchall()


def states(folder: Path) -> dict[str, str]:
    return dict(query(folder, "SELECT id, state FROM tasks"))  # type: ignore[arg-type]


def outputs(folder: Path, ids: list[str]) -> dict[str, tuple[int, int]]:
    """task id -> (inode, mtime_ns) of its output, for outputs on disk: a rewrite shows."""
    found = {}
    for task_id in ids:
        path = folder / "in" / f"{task_id}.edited.png"
        if path.exists():
            st = path.stat()
            found[task_id] = (st.st_ino, st.st_mtime_ns)
    return found


def wait_ended(sim: Sim) -> None:
    wait_until(sim.all_ended, "every batch to end")
