"""A real third-party gateway in the loop: the LiteLLM proxy (PyPI `litellm[proxy]`) in front
of `imgedit simulate`, both in their own processes on loopback, and the CLI through both.

LiteLLM rewrites errors: `code` becomes the status number and `type` its own words
(measured with litellm 1.108.7: quota is 429 "throttling_error" with the relay's body in
the message; a dropped upstream connection is 500 "Server disconnected"). Run by
`make test-gateway`, which installs the proxy into .venv-litellm and names it in
IMGEDIT_LITELLM.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, Cli, readline_within, tiny_image, transparent_mask, write_manifest

pytestmark = pytest.mark.gateway

RELAY_KEY = "sk-relay-token"  # what LiteLLM sends to our simulated relay
PROXY_KEY = "sk-litellm-master"  # what imgedit sends to LiteLLM


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def wait_ready(url: str, proc: subprocess.Popen[str], timeout: float = 240) -> None:
    """Until the proxy answers its liveliness probe (it takes tens of seconds to start)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the LiteLLM proxy exited while starting"
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the LiteLLM proxy did not come up within {timeout:g} s")


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    litellm = os.environ.get("IMGEDIT_LITELLM")
    if not litellm:
        pytest.fail("IMGEDIT_LITELLM is not set: run `make test-gateway`, which installs it")
    folder = tmp_path_factory.mktemp("litellm")
    sim_port, proxy_port = free_port(), free_port()
    faults = ["--fault-by-prompt", "[quota]=quota", "--fault-by-prompt", "[mod]=moderation",
              "--fault-by-prompt", "[drop]=drop"]
    env = {**os.environ, "IMGEDIT_API_KEY": RELAY_KEY, "PYTHONPATH": str(ROOT)}
    sim = subprocess.Popen([sys.executable, "-m", "pipeline", "simulate", "--port",
                            str(sim_port), *faults], cwd=folder, env=env, text=True,
                           stdout=subprocess.PIPE)
    assert sim.stdout is not None
    assert "listening" in readline_within(sim.stdout, 60)
    config = {
        "model_list": [{"model_name": "gpt-image-1", "litellm_params": {
            "model": "openai/gpt-image-1", "api_base": f"http://127.0.0.1:{sim_port}/v1",
            "api_key": RELAY_KEY}}],
        "general_settings": {"master_key": PROXY_KEY},
        "litellm_settings": {"num_retries": 0},
    }
    (folder / "litellm.yaml").write_text(yaml.safe_dump(config))
    log = (folder / "litellm.log").open("w")
    proc = subprocess.Popen(
        [litellm, "--config", "litellm.yaml", "--host", "127.0.0.1", "--port", str(proxy_port)],
        cwd=folder, stdout=log, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})  # no fetch from GitHub
    try:
        wait_ready(f"http://127.0.0.1:{proxy_port}/health/liveliness", proc)
        yield f"http://127.0.0.1:{proxy_port}/v1"
    finally:
        stop(proc)
        stop(sim)
        log.close()


def photos(folder: Path) -> None:
    tiny_image(folder / "in/a.png", (200, 40, 40))
    tiny_image(folder / "in/b.png", (40, 200, 40))
    transparent_mask(folder / "in/m.png")


def states(folder: Path) -> dict[str, tuple[str, int]]:
    with sqlite3.connect(folder / "job.ledger.sqlite") as db:
        return {r[0]: (r[1], r[2]) for r in db.execute("SELECT id, state, terminal FROM tasks")}


def test_a_manifest_runs_through_litellm(tmp_path: Path, proxy: str) -> None:
    photos(tmp_path)
    write_manifest(tmp_path, """
        version: 1
        defaults: {model: gpt-image-1, quality: low, size: 1024x1024, output: "out/{id}.{ext}"}
        limits: {concurrency: 2, rate: unlimited}
        tasks:
          - {id: single, images: in/a.png, prompt: Recolor it navy}
          - {id: several, images: [in/a.png, in/b.png], prompt: Both on a navy tray}
          - {id: masked, images: in/a.png, mask: in/m.png, prompt: Paint the left navy}
          - {id: two, images: in/b.png, n: 2, prompt: Recolor it navy}
          - {id: refused, images: in/a.png, prompt: "Something the safety system refuses [mod]"}
          - {id: dropped, images: in/b.png, prompt: "The connection drops [drop]"}
    """)
    cli = Cli(tmp_path)
    cli.env["IMGEDIT_API_KEY"] = PROXY_KEY
    code, summary = cli.json("run", "job.yaml", "--base-url", proxy, "--retries", "1",
                             "--no-retry-unknown", timeout=300)
    assert code == 1, summary  # finished; one refused, one maybe billed
    assert (summary["succeeded"], summary["failed"], summary["unknown"]) == (4, 1, 1), summary
    found = states(tmp_path)
    assert found["refused"] == ("failed", 1)  # moderation: terminal, not retried
    assert found["dropped"] == ("unknown", 0)  # LiteLLM's plain 500 read as a lost answer
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [
        "masked.png", "several.png", "single.png", "two-0.png", "two-1.png"]
    sidecar = json.loads((tmp_path / "out/two-0.json").read_text())
    assert sidecar["request"]["n"] == 2


def test_a_quota_error_through_litellm_aborts_the_run(tmp_path: Path, proxy: str) -> None:
    photos(tmp_path)
    write_manifest(tmp_path, """
        version: 1
        defaults: {model: gpt-image-1, output: "out/{id}.{ext}"}
        limits: {concurrency: 1}
        tasks:
          - {id: broke, images: in/a.png, prompt: "No money left [quota]"}
          - {id: next, images: in/b.png, prompt: Recolor it navy}
    """)
    cli = Cli(tmp_path)
    cli.env["IMGEDIT_API_KEY"] = PROXY_KEY
    done = cli("run", "job.yaml", "--base-url", proxy, timeout=300)
    assert done.returncode == 3, done.stderr  # not three retries and exit 1
    assert "top up" in done.stderr
    assert states(tmp_path)["broke"][0] == "failed"
    assert "next" not in states(tmp_path)  # nothing more was sent after the abort
