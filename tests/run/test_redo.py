"""`run --redo-rejected`: exactly the rejected results go again, and the rejected files stay.

Real runs of `python -m pipeline` against the simulator over loopback; decisions
are written with the ledger's own Reviews, as the review page writes them.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from pipeline.ledger.reviews import Reviews
from pipeline.ledger.store import Ledger
from pipeline.run.redo import keep_rejected
from pipeline.simulator.app import SimulatorThread
from tests.conftest import Cli, tiny_image, write_manifest

MANIFEST = """
    version: 1
    provider: simulator
    limits: {rate: unlimited}  # the default 30/min spaces requests 2 s apart
    defaults: {model: gpt-image-1, quality: low, size: 1024x1024}
    tasks:
      - glob: "pics/*.png"
        prompt: Put the product on white
"""


def reject(folder: Path, task_id: str, note: str = "wrong colour") -> None:
    with Ledger.open(folder / "job.ledger.sqlite") as book:
        Reviews(book).decide(task_id, "rejected", note)


def last_prompt(sim: SimulatorThread) -> str:
    with urllib.request.urlopen(sim.base_url.removesuffix("/v1") + "/_sim/last") as answer:
        prompt: str = json.load(answer)["form"]["prompt"]
    return prompt


def test_redo_sends_the_rejected_keeps_their_files_and_leaves_the_rest(
        tmp_path: Path, cli: Cli, sim: SimulatorThread) -> None:
    for name in ("a", "b", "c"):
        tiny_image(tmp_path / "pics" / f"{name}.png")
    write_manifest(tmp_path, MANIFEST)
    run = ("run", "job.yaml", "--base-url", sim.base_url, "--quiet")
    assert cli(*run).returncode == 0
    nothing = cli(*run, "--redo-rejected")  # nobody rejected anything: nothing to send
    assert nothing.returncode == 0 and sim.stats().requests == 3
    first = (tmp_path / "pics" / "b.edited.png").read_bytes()
    reject(tmp_path, "pics/b.png")

    plain = cli(*run)  # a plain run leaves a rejected result alone
    assert plain.returncode == 0 and sim.stats().requests == 3
    done = cli(*run[:-1], "--redo-rejected", "--prompt-suffix", "Keep the label.", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["plan"] == {"done": 2, "rejected": 1}
    stats = sim.stats()
    assert stats.requests == 4 and len(stats.by_key) == 4  # one more, under a new key
    assert last_prompt(sim) == "Put the product on white Keep the label."
    kept = tmp_path / "pics" / "b.edited.rejected-1.png"
    assert kept.read_bytes() == first
    old_sidecar = json.loads((tmp_path / "pics" / "b.edited.rejected-1.json").read_text())
    new_sidecar = json.loads((tmp_path / "pics" / "b.edited.json").read_text())
    assert old_sidecar["prompt"] == "Put the product on white"
    assert new_sidecar["prompt"] == "Put the product on white Keep the label."
    assert new_sidecar["fingerprint"] == old_sidecar["fingerprint"]  # the same task

    # The new result is unreviewed and done: nothing goes again, and the kept files are
    # never taken for inputs by the glob.
    assert cli(*run, "--redo-rejected").returncode == 0
    assert cli(*run).returncode == 0 and sim.stats().requests == 4
    plan = cli("validate", "job.yaml")
    assert "3 tasks (done 3)" in plan.stdout, plan.stdout

    reject(tmp_path, "pics/b.png", "still wrong")  # a second rejection keeps both
    assert cli(*run, "--redo-rejected").returncode == 0 and sim.stats().requests == 5
    assert (tmp_path / "pics" / "b.edited.rejected-2.png").exists() and kept.exists()
    status = cli("status", "job.yaml")
    assert "reviewed" not in status.stdout  # the redone result awaits a new review
    assert json.loads(cli("status", "job.yaml", "--json").stdout)["reviews"] == {
        "approved": 0, "rejected": 0, "unreviewed": 3}


def test_prompt_suffix_goes_with_redo_rejected(tmp_path: Path, cli: Cli) -> None:
    write_manifest(tmp_path, MANIFEST)
    done = cli("run", "job.yaml", "--prompt-suffix", "more")
    assert done.returncode == 2 and "--prompt-suffix goes with --redo-rejected" in done.stderr


def test_keep_rejected_takes_the_first_number_free_for_every_file(tmp_path: Path) -> None:
    files = [tmp_path / "x.edited-0.png", tmp_path / "x.edited-1.png", tmp_path / "x.json"]
    for path in files:
        path.write_text(path.name)
    (tmp_path / "x.edited-1.rejected-1.png").write_text("an earlier one")
    kept = keep_rejected([*files, tmp_path / "gone.png"])
    assert [p.name for p in kept] == ["x.edited-0.rejected-2.png", "x.edited-1.rejected-2.png",
                                      "x.rejected-2.json"]
    assert [p.read_text() for p in kept] == [p.name for p in files]
    assert not any(p.exists() for p in files)
    assert keep_rejected(files) == []  # nothing left to keep: nothing renamed
