"""A run through the CLI against a hostile gateway: every bad answer fails its own task.

One run (module fixture) over good tasks and one task per hostile case of issue
11 (items 2, 3, 5, 6, 7, 8; tests/gateway/hostile.py answers them). The run
finishes, exits 1 without a traceback, the good tasks succeed, each bad one
fails with its reason; what was paid is counted in the spend, and the summary's
double charges equal what the gateway billed twice. The key, terminal escapes
and huge messages reach no output, file or ledger row.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from pipeline.config.models import Models
from pipeline.task import Location, Task
from tests.conftest import ROOT, SHIPPED_MODELS, TEST_KEY, Cli, tiny_image, write_manifest
from tests.gateway.hostile import Hostile, Seen


def estimate(folder: Path, case: str) -> float:
    """What models.yaml expects a case's task to cost (gpt-image-1, low, 1024x1024, its
    prompt and its one input included): what an answer without usable `usage` is priced at."""
    task = Task(id=case, images=(folder / "in" / f"{case}.png",),
                prompt=f"Put it on white [{case}]", where=Location(folder, 1), root=folder,
                fields={"model": "gpt-image-1", "quality": "low", "size": "1024x1024"})
    return Models.load(SHIPPED_MODELS).estimate(task)
OK_USAGE_COST = (50 * 10.0 + 100 * 40.0) / 1_000_000  # the "ok" answer's usage, priced

# case -> words of the failure reason (each a 200, or not: see NOT_PAID)
FAILS = {
    "deep": "nested over 1000 deep",
    "data-str": "data[0] is a str, not an object",
    "b64-int": "b64_json is int, not a string",
    "url-int": "url is int, not a string",
    "huge-url": "over the 1.0 MB limit",
    "huge-b64": "400.0 MB, over the 1.0 MB limit",
    "file-url": "not http(s), refused",
    "private-url": "internal address (10.20.30.40)",
    "loopback-url": "internal address (127.0.0.2)",
    "downgrade": "a downgrade from the gateway's https, refused",
    "redirect-to-http": "redirected to http, refused",
    "post-307": "redirected the request",
    "echo-key": "bad header Bearer ***; your key *** is wrong",
    "huge-message": "{\"error\": {\"message\": \"xxxxxxxx",  # its head: over the cap
    "escapes": "RED  done",
    "gif": "a GIF, not png, jpeg or webp",
    "tiff": "a TIFF, not png, jpeg or webp",
    "bmp": "a BMP, not png, jpeg or webp",
    "svg": "an SVG, not png, jpeg or webp",
    "zero": "holds 0 image(s); 1 were asked for",
    "bomb": "decompression bomb",
}
NOT_PAID = {"post-307", "echo-key", "huge-message", "escapes"}  # no 200: one try, no charge
SUCCEEDS = ["ok", "ok-url-own", "ok-url-cdn", "ok-redirect", "usage-lol", "usage-nan",
            "hundred", "echo-key-200"]


@dataclass
class HostileRun:
    folder: Path
    cli: Cli
    env: dict[str, str]
    code: int
    stdout: str
    stderr: str
    summary: dict[str, Any]
    seen: Seen
    hostile: Hostile

    def row(self, task_id: str) -> sqlite3.Row:
        with closing(sqlite3.connect(self.folder / "job.ledger.sqlite")) as db:
            db.row_factory = sqlite3.Row
            return db.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()


def dump(ledger: Path) -> str:
    with closing(sqlite3.connect(ledger)) as db:
        return "\n".join(db.iterdump())


def config_folder(folder: Path, base_url: str) -> Path:
    """The shipped config, with a 1 MB answer cap and a provider with an extra header."""
    config = folder / "config"
    shutil.copytree(ROOT / "pipeline" / "config", config,
                    ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    models = yaml.safe_load((config / "models.yaml").read_text())
    models["gpt-image-1"]["max_answer_mb"] = 1
    (config / "models.yaml").write_text(yaml.safe_dump(models))
    providers = yaml.safe_load((config / "providers.yaml").read_text())
    providers["hostile"] = {"base_url": base_url, "api_key_env": "HOSTILE_KEY",
                            "image_field": "image", "images_field": "image[]",
                            "headers": {"X-Org": "org-secret"}}
    (config / "providers.yaml").write_text(yaml.safe_dump(providers))
    return config


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("hostile")
    with Hostile(TEST_KEY) as gateway:
        config = config_folder(folder, gateway.base_url)
        lines = ["version: 1", "provider: hostile",
                 "defaults: {model: gpt-image-1, quality: low, size: 1024x1024,",
                 '           output: "out/{id}.{index}.{ext}"}',
                 "limits: {rate: unlimited, concurrency: 4}", "tasks:"]
        for case in [*SUCCEEDS, *FAILS]:
            tiny_image(folder / "in" / f"{case}.png")
            lines += [f"  - id: {case}", f"    images: in/{case}.png",
                      f'    prompt: "Put it on white [{case}]"']
        write_manifest(folder, "\n".join(lines) + "\n")
        env = {"SSL_CERT_FILE": str(gateway.write_ca(folder / "ca.pem")),
               "IMGEDIT_CONFIG": str(config), "HOSTILE_KEY": TEST_KEY}
        cli = Cli(folder)
        done = cli("run", "job.yaml", "--json", "-v", "--log-file", "run.log", env=env,
                   timeout=120)
        summary = json.loads(done.stdout) if done.stdout.strip() else {}
        yield HostileRun(folder, cli, env, done.returncode, done.stdout, done.stderr,
                         summary, gateway.seen, gateway)


def test_the_run_finishes_with_exit_1_and_no_traceback(hostile_run: HostileRun) -> None:
    assert hostile_run.code == 1, hostile_run.stderr
    assert "Traceback" not in hostile_run.stderr
    summary = hostile_run.summary
    assert (summary["succeeded"], summary["failed"], summary["unknown"]) == (
        len(SUCCEEDS), len(FAILS), 0)


@pytest.mark.parametrize("case", SUCCEEDS)
def test_good_answers_succeed(hostile_run: HostileRun, case: str) -> None:
    row = hostile_run.row(case)
    assert row["state"] == "succeeded", row["reason"]
    with Image.open(hostile_run.folder / f"out/{case}.0.png") as image:
        image.load()
    assert hostile_run.seen.requests[case] == 1


@pytest.mark.parametrize("case", list(FAILS))
def test_each_bad_answer_fails_its_task_with_its_reason(hostile_run: HostileRun,
                                                        case: str) -> None:
    row = hostile_run.row(case)
    assert (row["state"], row["terminal"]) == ("failed", 1)
    assert FAILS[case] in row["reason"]
    # A paid but unusable answer is tried once more, never the whole retry budget.
    assert hostile_run.seen.requests[case] == (1 if case in NOT_PAID else 2)
    assert not list((hostile_run.folder / "out").glob(f"{case}.*"))


def test_exactly_n_images_are_written_and_the_extras_noted(hostile_run: HostileRun) -> None:
    out = hostile_run.folder / "out"
    assert sorted(p.name for p in out.glob("hundred.*")) == ["hundred.0.json", "hundred.0.png"]
    sidecar = json.loads((out / "hundred.0.json").read_text())
    assert sidecar["notes"] == ["the answer held 100 images; 1 asked for: the other 99 "
                                "were ignored"]


def test_bad_usage_is_ignored_and_noted_and_priced_at_the_estimate(
        hostile_run: HostileRun) -> None:
    out = hostile_run.folder / "out"
    lol = json.loads((out / "usage-lol.0.json").read_text())
    assert (lol["usage"], lol["cost"]) == (None, estimate(hostile_run.folder, "usage-lol"))
    assert lol["notes"] == ["usage ignored: str, not an object"]
    nan = json.loads((out / "usage-nan.0.json").read_text())
    assert (nan["usage"], nan["cost"]) == (None, estimate(hostile_run.folder, "usage-nan"))
    assert [n.split(" ignored")[0] for n in nan["notes"]] == [
        "usage.input_tokens", "usage.output_tokens"]


def test_every_paid_answer_is_in_the_spend(hostile_run: HostileRun) -> None:
    folder = hostile_run.folder
    paid_bad = [case for case in FAILS if case not in NOT_PAID]  # each paid twice
    # "ok" and "echo-key-200" are priced by usage
    good_at_estimate = [case for case in SUCCEEDS if case not in ("ok", "echo-key-200")]
    expected = (OK_USAGE_COST + 10.0 / 1_000_000
                + sum(estimate(folder, case) for case in good_at_estimate)
                + 2 * sum(estimate(folder, case) for case in paid_bad))
    assert hostile_run.summary["spent"] == round(expected, 4)
    status = hostile_run.cli("status", "job.yaml", "--json", env=hostile_run.env)
    assert json.loads(status.stdout)["spent"] == round(expected, 4)


def test_double_charges_equal_what_the_gateway_billed_twice(hostile_run: HostileRun) -> None:
    assert hostile_run.seen.billed_twice == len(FAILS) - len(NOT_PAID)
    assert hostile_run.summary["possible_double_charges"] == hostile_run.seen.billed_twice


def test_the_key_goes_only_to_the_gateways_own_origin(hostile_run: HostileRun) -> None:
    seen = hostile_run.seen.headers
    own = seen["gw/files/ok.png"] + seen["gw/files/to-cdn.png"]
    assert own and all(h.get("Authorization") == f"Bearer {TEST_KEY}"
                       and h.get("X-Org") == "org-secret" for h in own)
    cdn = seen["cdn/files/ok.png"]
    assert len(cdn) == 2  # ok-url-cdn, and ok-redirect after its hop
    assert all("Authorization" not in h and "X-Org" not in h for h in cdn)
    assert hostile_run.seen.plain_hits == 0  # no downgrade, no followed redirect


def test_what_is_stored_and_printed_is_clean(hostile_run: HostileRun) -> None:
    folder, env = hostile_run.folder, hostile_run.env
    hostile_run.cli("report", "job.yaml", env=env)
    outputs = {
        "run": hostile_run.stdout + hostile_run.stderr,
        "status": hostile_run.cli("status", "job.yaml", env=env).stdout,
        "export": hostile_run.cli("export", "job.yaml", "--format", "jsonl", env=env).stdout,
        "report": (folder / "job.report.html").read_text(),
        "log": (folder / "run.log").read_text(),
        "ledger": dump(folder / "job.ledger.sqlite"),
        "sidecars": "".join(p.read_text() for p in (folder / "out").glob("*.json")),
    }
    for name, text in outputs.items():
        assert TEST_KEY not in text, name
        assert "\x1b" not in text and "\x07" not in text, name
        assert "x" * 2100 not in text, name
    assert "Bearer ***" in outputs["status"]
    echoed = json.loads((folder / "out/echo-key-200.0.json").read_text())
    assert (echoed["revised_prompt"], echoed["request_id"]) == ("made with ***", "req-***")
    assert echoed["usage"] == {"input_tokens": 1}


def test_a_rerun_pays_for_no_bad_answer_again(hostile_run: HostileRun) -> None:
    before = sum(hostile_run.seen.requests.values())
    again = hostile_run.cli("run", "job.yaml", "--json", env=hostile_run.env)
    summary = json.loads(again.stdout)
    assert (again.returncode, summary["sent"], summary["held"]) == (1, 0, len(FAILS))
    assert sum(hostile_run.seen.requests.values()) == before


def test_sending_failed_ones_again_counts_each_second_charge(hostile_run: HostileRun) -> None:
    billed_twice = hostile_run.seen.billed_twice
    code, summary = hostile_run.cli.json("run", "job.yaml", "--only", "gif", "--only", "zero",
                                         "--only-failed", env=hostile_run.env)
    assert (code, summary["sent"], summary["failed"]) == (1, 2, 2)
    assert summary["possible_double_charges"] == hostile_run.seen.billed_twice - billed_twice
    assert summary["possible_double_charges"] == 4  # two tasks, two more paid answers each
