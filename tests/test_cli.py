"""What a new user trips on, as the CLI answers it now: a subprocess, real files, the simulator."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import yaml

from pipeline.cli import SHIPPED
from tests.conftest import ROOT, Cli, tiny_image, write_manifest

JOB = """
    version: 1
    provider: simulator
    defaults: {model: gpt-image-1, quality: low, size: 1024x1024}
    limits: {rate: unlimited}
    tasks:
      - glob: "photos/*.jpg"
        prompt: white background
"""


def photos(folder: Path, names: tuple[str, ...] = ("a.jpg", "B.JPG", "c shot.jpeg")) -> Path:
    for i, name in enumerate(names):
        tiny_image(folder / "photos" / name, (40 * i, 90, 200), fmt="JPEG")
    return write_manifest(folder, JOB)


def test_help_states_the_shipped_defaults_and_whole_short_help(cli: Cli) -> None:
    shipped = yaml.safe_load((ROOT / "pipeline/config/defaults.yaml").read_text())
    assert {k: shipped[k] for k in SHIPPED} == SHIPPED
    top = cli("--help").stdout
    commands = top.split("Commands:")[1].splitlines()
    assert commands and not any(line.endswith("...") for line in commands)
    assert any(line.split()[:1] == ["init"] for line in commands if line.strip())
    assert "[default: 4]" in " ".join(cli("run", "--help").stdout.split())
    for command in ("run", "validate", "status", "report", "export", "simulate", "init",
                    "review"):
        assert "--config" in cli(command, "--help").stdout, command
    validate = cli("validate", "--help").stdout
    assert all(flag in validate for flag in ("--provider", "--base-url", "--json", "--ledger"))


def test_quiet_run_prints_nothing_when_all_is_well(tmp_path: Path, cli: Cli, sim) -> None:
    photos(tmp_path)
    first = cli("run", "job.yaml", "--base-url", sim.base_url, "--quiet")
    assert (first.returncode, first.stdout, first.stderr) == (0, "", "")
    again = cli("run", "job.yaml", "--base-url", sim.base_url, "--quiet")
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")


def test_header_names_the_real_host_and_what_was_left_out(tmp_path: Path, cli: Cli,
                                                          sim) -> None:
    photos(tmp_path)
    host = sim.base_url.split("/")[2]
    done = cli("run", "job.yaml", "--base-url", sim.base_url, "--only", "photos/a.jpg")
    assert done.returncode == 0, done.stderr
    assert (f"3 tasks via {host}; 1 to send, 0 already done or held, 2 not selected "
            "(--only / --limit)") in done.stdout
    assert "simulated $0.01 (nothing billed)" in done.stdout
    limited = cli("run", "job.yaml", "--base-url", sim.base_url, "--limit", "1")
    assert "1 to send, 1 already done or held, 1 not selected" in limited.stdout

    status = cli("status", "job.yaml")
    assert status.stdout.startswith("job.yaml: pending 1, succeeded 2 (never run 1); "
                                    "simulated $"), status.stdout
    assert status.stdout.rstrip().endswith("(nothing billed)")
    assert json.loads(cli("status", "job.yaml", "--json").stdout)["never_run"] == 1


def test_a_failed_run_reprocess_command_keeps_the_flags(tmp_path: Path, cli: Cli,
                                                        simulator) -> None:
    photos(tmp_path)
    sim = simulator(faults={"moderation": 1.0})
    done = cli("run", "job.yaml", "--base-url", sim.base_url)
    assert done.returncode == 1
    assert (f"reprocess with: imgedit run {tmp_path / 'job.yaml'} --base-url {sim.base_url} "
            "--only-failed") in done.stdout


def test_no_key_names_each_variable_once(tmp_path: Path, cli: Cli, sim) -> None:
    photos(tmp_path)
    job = tmp_path / "job.yaml"
    job.write_text(job.read_text().replace("provider: simulator", "provider: wenwen"))
    done = cli("run", "job.yaml", env={"IMGEDIT_API_KEY": "", "WENWEN_API_KEY": ""})
    assert done.returncode == 2
    assert "no API key: set WENWEN_API_KEY or IMGEDIT_API_KEY in the environment" in done.stderr


def test_an_empty_glob_warns_and_exits_0(tmp_path: Path, cli: Cli, sim) -> None:
    write_manifest(tmp_path, JOB)
    done = cli("run", "job.yaml", "--base-url", sim.base_url)
    assert done.returncode == 0, done.stderr
    assert "warning:" in done.stderr and "matches no files" in done.stderr
    quiet = cli("run", "job.yaml", "--base-url", sim.base_url, "--quiet")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")


def test_validate_json_lists_every_problem_and_the_plan(tmp_path: Path, cli: Cli) -> None:
    photos(tmp_path)
    plan = cli("validate", "job.yaml", "--json")
    assert plan.returncode == 0 and json.loads(plan.stdout)["to_send"] == 3
    body = "".join(f"  - {{images: gone-{i}.png, prompt: p}}\n" for i in range(30))
    (tmp_path / "bad.yaml").write_text("version: 1\ntasks:\n" + body)
    bad = cli("validate", "bad.yaml", "--json")
    assert bad.returncode == 2 and "... and 10 more" in bad.stderr
    problems = json.loads(bad.stdout)["problems"]
    assert len(problems) == 30
    assert (problems[0]["line"], problems[0]["field"]) == (3, "tasks[0].images")


def test_export_defaults_to_csv_and_a_closed_pipe_is_no_error(tmp_path: Path, cli: Cli,
                                                              sim) -> None:
    photos(tmp_path, tuple(f"p{i:03}.jpg" for i in range(120)))
    assert cli("run", "job.yaml", "--base-url", sim.base_url, "--limit", "100").returncode == 0
    whole = cli("export", "job.yaml")
    rows = whole.stdout.splitlines()
    assert rows[0].startswith("id,state,") and len(rows) == 121  # 20 never run, as pending
    assert sum(",pending," in r for r in rows) == 20
    piped = subprocess.run(
        f"set -o pipefail; {sys.executable} -m pipeline export job.yaml | head -2",
        shell=True, executable="/bin/bash", cwd=tmp_path, env=cli.env, capture_output=True,
        text=True)
    assert (piped.returncode, piped.stderr) == (0, "")
    assert len(piped.stdout.splitlines()) == 2


def test_init_writes_a_manifest_that_validates_and_runs(tmp_path: Path, cli: Cli, sim) -> None:
    photos(tmp_path)
    tiny_image(tmp_path / "photos/shirt-mask.png")
    done = cli("init", "photos")
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "photos/imgedit.yaml").read_text()
    assert "# " in text and "glob:" in text
    assert cli("init", "photos").returncode == 2  # never overwrites without --force
    check = cli("validate", "photos/imgedit.yaml")
    assert check.returncode == 0, check.stderr
    assert "3 tasks (new 3)" in check.stdout  # the mask is excluded
    run = cli("run", "photos/imgedit.yaml", "--base-url", sim.base_url, "--rate", "unlimited")
    assert run.returncode == 0, run.stderr


def test_money_from_a_real_provider_is_spent_not_simulated(tmp_path: Path, cli: Cli,
                                                           sim) -> None:
    job = photos(tmp_path)
    job.write_text(job.read_text().replace("provider: simulator", "provider: wenwen"))
    done = cli("run", "job.yaml", "--base-url", sim.base_url)  # as if the gateway were wenwen
    assert done.returncode == 0 and "| spent $" in done.stdout
    assert "; spent $" in cli("status", "job.yaml").stdout


def test_simulate_takes_its_options_from_the_configs_simulator(tmp_path: Path, cli: Cli) -> None:
    own = tmp_path / "own"
    own.mkdir()
    (own / "providers.yaml").write_text(
        "simulator:\n  simulator: {fault_by_prompt: {navy: moderation}, seed: 3}\n")
    photos(tmp_path)
    write_manifest(tmp_path, JOB.replace("white background", "navy background"))
    server = cli.popen("simulate", "--port", "0", "--config", str(own))
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split()[-1]  # "simulator listening on URL"
        code, summary = cli.json("run", "job.yaml", "--base-url", url)
        assert code == 1 and summary["failed"] == 3  # every prompt meets the config's fault
        assert "moderation_blocked" in summary["failures"][0]["reason"]
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_a_damaged_ledger_page_is_a_message_in_every_command_that_reads_it(
        tmp_path: Path, cli: Cli, sim) -> None:
    photos(tmp_path)
    assert cli("run", "job.yaml", "--base-url", sim.base_url, "--quiet").returncode == 0
    ledger = tmp_path / "job.ledger.sqlite"
    with closing(sqlite3.connect(ledger)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = ledger.stat().st_size // 4096
    with open(ledger, "r+b") as file:  # every page but the schema's, torn: open works
        file.seek(4096)
        file.write(b"\xa5" * 4096 * (pages - 1))
    for command in ("status", "export", "report"):
        done = cli(command, "job.yaml")
        assert done.returncode == 2, (command, done.stderr)
        assert "the ledger is damaged" in done.stderr and "move it aside" in done.stderr
        assert "Traceback" not in done.stderr, command


def test_a_run_leaves_with_everything_said_and_the_ledger_closed(tmp_path: Path,
                                                                 cli: Cli, sim) -> None:
    # The command line skips the interpreter's teardown (cli._leave): what it printed to a
    # pipe, what it logged to a file and the ledger must all be whole when it is gone, and
    # the exit code the run's.
    photos(tmp_path, tuple(f"p{i:02}.jpg" for i in range(12)))
    for command in (["run", "--base-url", sim.base_url], ["validate"]):
        done = cli(command[0], "job.yaml", *command[1:], "--json",
                   *(["--log-file", "run.log"] if command[0] == "run" else []))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)  # the whole summary, or the whole plan
    assert (tmp_path / "run.log").read_text().splitlines()[-1].split(" INFO ")[1].startswith(
        "run finished")
    assert not list(tmp_path.glob("*.sqlite-wal"))  # closed, so checkpointed and removed
    failing = cli("run", "job.yaml", "--base-url", sim.base_url, "--json", "--force",
                  env={"IMGEDIT_API_KEY": "wrong"})
    assert failing.returncode == 3 and json.loads(failing.stdout)["exit_code"] == 3
