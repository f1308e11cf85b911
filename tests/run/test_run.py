"""End to end: the CLI as a subprocess, the simulator on loopback, real files and ledger."""

from __future__ import annotations

import json
import queue
import sqlite3
import subprocess
import threading
from pathlib import Path

from PIL import Image

from tests.conftest import TEST_KEY, Cli, tiny_image, transparent_mask, write_manifest

MANIFEST = """
    version: 1
    defaults: {model: gpt-image-1, quality: low, size: 1024x1024}
    limits: {rate: 100/s, concurrency: 4}
    tasks:
      - id: basket
        images: [products/a.png, products/b.png]
        prompt: a gift basket of these two
      - id: shirt
        images: products/shirt.jpg
        mask: products/shirt-mask.png
        prompt: Recolor the shirt navy blue
      - glob: "catalog/**/*.jpg"
        prompt: Put the product on a pure white background
"""


def catalog(folder: Path) -> Path:
    tiny_image(folder / "products/a.png", (10, 200, 10))
    tiny_image(folder / "products/b.png", (10, 10, 200))
    tiny_image(folder / "products/shirt.jpg", (200, 30, 30))
    transparent_mask(folder / "products/shirt-mask.png")
    tiny_image(folder / "catalog/mugs/blue.jpg", (30, 30, 160))
    tiny_image(folder / "catalog/bags/tote.jpg", (30, 160, 30))
    return write_manifest(folder, MANIFEST)


def ledger_rows(folder: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(folder / "job.ledger.sqlite") as db:
        return db.execute(sql).fetchall()


def test_run_writes_every_output_and_a_rerun_sends_nothing(tmp_path: Path, cli: Cli, sim) -> None:
    catalog(tmp_path)
    first = cli("run", "job.yaml", "--base-url", sim.base_url)
    assert first.returncode == 0, first.stderr
    assert sim.stats().requests == 4
    for name in ("products/a.edited.png", "products/shirt.edited.png",
                 "catalog/mugs/blue.edited.png", "catalog/bags/tote.edited.png"):
        with Image.open(tmp_path / name) as image:
            assert image.size == (1024, 1024)
    sidecar = json.loads((tmp_path / "products/shirt.edited.json").read_text())
    assert sidecar["task_id"] == "shirt" and sidecar["attempts"] == 1
    assert sidecar["request"]["quality"] == "low"
    states = ledger_rows(tmp_path, "select state, count(*) from tasks group by state")
    assert states == [("succeeded", 4)]
    assert ledger_rows(tmp_path, "select count(*) from attempts")[0][0] == 4

    second = cli("run", "job.yaml", "--base-url", sim.base_url)
    assert second.returncode == 0, second.stderr
    assert "nothing to send" in second.stdout
    assert sim.stats().requests == 4


def test_changed_input_or_prompt_runs_again_and_only_that(tmp_path: Path, cli: Cli, sim) -> None:
    manifest = catalog(tmp_path)
    assert cli("run", "job.yaml", "--base-url", sim.base_url).returncode == 0
    tiny_image(tmp_path / "catalog/mugs/blue.jpg", (90, 90, 250))  # new photo of the mug
    manifest.write_text(manifest.read_text().replace("navy blue", "forest green"))
    code, summary = cli.json("run", "job.yaml", "--base-url", sim.base_url)
    assert code == 0
    assert summary["plan"] == {"changed": 2, "done": 2}
    assert summary["sent"] == 2
    assert sim.stats().requests == 6


def test_missing_output_runs_again(tmp_path: Path, cli: Cli, sim) -> None:
    catalog(tmp_path)
    assert cli("run", "job.yaml", "--base-url", sim.base_url).returncode == 0
    (tmp_path / "catalog/bags/tote.edited.png").unlink()
    code, summary = cli.json("run", "job.yaml", "--base-url", sim.base_url)
    assert (code, summary["sent"]) == (0, 1)
    assert (tmp_path / "catalog/bags/tote.edited.png").exists()


def test_a_lost_ledger_does_not_pay_again(tmp_path: Path, cli: Cli, sim) -> None:
    catalog(tmp_path / "old")
    assert cli("run", "old/job.yaml", "--base-url", sim.base_url).returncode == 0
    # The catalog, results and sidecars copied elsewhere; the ledger left behind.
    (tmp_path / "old").rename(tmp_path / "new")
    for stale in (tmp_path / "new").glob("job.ledger.sqlite*"):
        stale.unlink()
    tiny_image(tmp_path / "new/catalog/mugs/blue.jpg", (90, 90, 250))  # one real change

    code, summary = cli.json("run", "new/job.yaml", "--base-url", sim.base_url)
    assert code == 0
    assert summary["plan"] == {"done": 3, "new": 1}
    assert summary["sent"] == 1
    assert sim.stats().requests == 5
    states = ledger_rows(tmp_path / "new", "select state, count(*) from tasks group by state")
    assert states == [("succeeded", 4)]
    outputs = ledger_rows(tmp_path / "new", "select outputs from tasks where id = 'shirt'")
    assert json.loads(outputs[0][0]) == [str(tmp_path / "new/products/shirt.edited.png")]


def test_bad_manifest_exits_2_and_sends_nothing(tmp_path: Path, cli: Cli, sim) -> None:
    catalog(tmp_path)
    write_manifest(tmp_path, """
        version: 1
        tasks:
          - images: products/a.png
            promt: typo
    """)
    done = cli("run", "job.yaml", "--base-url", sim.base_url)
    assert done.returncode == 2
    assert "job.yaml:4" in done.stderr and "did you mean 'prompt'" in done.stderr
    assert sim.stats().requests == 0


def test_dry_run_and_validate_print_the_plan_and_send_nothing(tmp_path: Path, cli: Cli,
                                                              sim) -> None:
    catalog(tmp_path)
    for args in (["validate", "job.yaml"], ["run", "job.yaml", "--dry-run",
                                            "--base-url", sim.base_url]):
        done = cli(*args)
        assert done.returncode == 0, done.stderr
        assert "4 tasks (new 4)" in done.stdout and "estimated cost $0.05" in done.stdout
    assert sim.stats().requests == 0


def test_selection_flags(tmp_path: Path, cli: Cli, sim) -> None:
    catalog(tmp_path)
    code, summary = cli.json("run", "job.yaml", "--base-url", sim.base_url, "--limit", "1")
    assert (code, summary["sent"]) == (0, 1)
    code, summary = cli.json("run", "job.yaml", "--base-url", sim.base_url, "--only", "shirt")
    assert (code, summary["sent"]) == (0, 1)
    code, summary = cli.json("run", "job.yaml", "--base-url", sim.base_url, "--force",
                             "--only", "shirt")
    assert (code, summary["sent"]) == (0, 1)
    assert sim.stats().requests == 3
    # --force asks for new work: a new Idempotency-Key, so no gateway replays the old answer
    assert len(sim.stats().by_key) == 3


def test_status_and_export(tmp_path: Path, cli: Cli, sim) -> None:
    catalog(tmp_path)
    cli("run", "job.yaml", "--base-url", sim.base_url)
    status = cli("status", "job.yaml", "--json")
    assert json.loads(status.stdout)["counts"]["succeeded"] == 4
    exported = cli("export", "job.yaml", "--format", "jsonl")
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert sorted(r["id"] for r in rows) == ["basket", "catalog/bags/tote.jpg",
                                            "catalog/mugs/blue.jpg", "shirt"]
    csv_out = cli("export", "job.yaml", "--format", "csv", "-o", "tasks.csv")
    assert csv_out.returncode == 0
    assert (tmp_path / "tasks.csv").read_text().startswith("id,state,terminal")


def test_the_key_is_in_no_file_and_no_output(tmp_path: Path, cli: Cli, simulator) -> None:
    """A full scenario with retries, a refusal, logs, status, export and the report:
    every stream and every file written is scanned for the key."""
    catalog(tmp_path)
    sim = simulator(fail_first={"502": 1}, fault_by_prompt={"navy": "moderation"})
    streams = []
    for args in (["run", "job.yaml", "--base-url", sim.base_url, "-vv", "--log-file",
                  "logs/run.log"],
                 ["run", "job.yaml", "--base-url", sim.base_url, "--retry-failed", "-vv",
                  "--log-format", "json", "--log-file", "logs/run.jsonl", "--json"],
                 ["status", "job.yaml", "--json"], ["export", "job.yaml", "--format", "jsonl"],
                 ["report", "job.yaml"]):
        done = cli(*args)
        assert done.returncode in (0, 1), done.stderr
        streams += [done.stdout, done.stderr]
    assert sim.stats().faults  # the scenario really met its faults
    assert any("task retry" in s for s in streams)
    for text in streams:
        assert TEST_KEY not in text
    scanned = 0
    for path in tmp_path.rglob("*"):
        if path.is_file():
            scanned += 1
            assert TEST_KEY.encode() not in path.read_bytes(), path
    assert scanned > 20  # outputs, sidecars, ledger (+WAL), logs, report, thumbnails


def test_python_dash_m_is_the_same_program(tmp_path: Path, cli: Cli) -> None:
    done = cli("--help")
    assert done.returncode == 0
    for command in ("run", "validate", "status", "report", "export", "simulate"):
        assert command in done.stdout


def test_every_problem_is_reported_at_once(tmp_path: Path, cli: Cli, sim) -> None:
    catalog(tmp_path)
    write_manifest(tmp_path, """
        version: 1
        defaults: {model: gpt-image-1, qualty: high}
        tasks:
          - id: shirt
            images: products/shirt.jpg
            prompt: navy
          - id: shirt
            images: [products/missing.png]
            prompt: white
            size: 800x600
    """)
    done = cli("run", "job.yaml", "--base-url", sim.base_url)
    assert done.returncode == 2
    for expected in ("job.yaml:2: defaults.qualty: unknown key 'qualty'; did you mean 'quality'",
                     "job.yaml:8: tasks[1].images: file not found",
                     "job.yaml:10: tasks[1].size: gpt-image-1 does not take size '800x600'",
                     "job.yaml:7: tasks[1].id: duplicate id 'shirt': also at"):
        assert expected in done.stderr
    assert sim.stats().requests == 0


def readline(proc: subprocess.Popen[str], timeout: float) -> str:
    """The process's next stdout line, or a failure after `timeout` s: never a hung test."""
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True)
    reader.start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        proc.kill()
        raise AssertionError(f"no line from {proc.args} within {timeout} s") from None


def test_simulate_serves_the_gateway_until_stopped(tmp_path: Path, cli: Cli) -> None:
    catalog(tmp_path)
    server = cli.popen("simulate", "--port", "0", "--fault", "502=0")
    assert server.stdout is not None
    line = readline(server, timeout=30)
    assert line.startswith("simulator listening on http://127.0.0.1:"), line
    base_url = line.split()[-1]
    try:
        done = cli("run", "job.yaml", "--base-url", base_url)
        assert done.returncode == 0, done.stderr
    finally:
        server.terminate()
        server.wait(timeout=10)
        server.stdout.close()
        assert server.stderr is not None
        server.stderr.close()
    assert (tmp_path / "products/shirt.edited.png").exists()
