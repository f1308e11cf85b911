"""Incremental nights and money: the hash cache, the estimate and --max-cost."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import Cli, tiny_image, write_manifest

CATALOG = """
    version: 1
    defaults: {model: gpt-image-1, quality: low, size: 1024x1024}
    limits: {rate: 1000/s, concurrency: 1}
    tasks:
      - glob: "skus/*.png"
        prompt: Put the product on a pure white background
"""


def skus(folder: Path, count: int) -> None:
    for i in range(count):
        tiny_image(folder / f"skus/{i:03d}.png", (i * 10 % 255, 80, 120))
    write_manifest(folder, CATALOG)


def test_unchanged_files_are_not_read_again(tmp_path: Path, cli: Cli, sim) -> None:
    skus(tmp_path, 2)
    assert cli("run", "job.yaml", "--base-url", sim.base_url).returncode == 0
    photo = tmp_path / "skus/000.png"
    stat = photo.stat()
    # Same size and mtime, different bytes: only a re-read could notice.
    photo.write_bytes(b"\0" * stat.st_size)
    os.utime(photo, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    done = cli("validate", "job.yaml", env={"IMGEDIT_BASE_URL": sim.base_url})
    assert done.returncode == 0, done.stderr
    # "2 tasks": the glob `skus/*.png` does not take the outputs for new inputs
    assert "2 tasks (done 2); would send 0" in done.stdout
    os.utime(photo, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    done = cli("validate", "job.yaml")
    assert done.returncode == 2
    assert "not a PNG, JPEG or WebP image" in done.stderr


def test_validate_prints_the_estimate(tmp_path: Path, cli: Cli) -> None:
    skus(tmp_path, 20)
    done = cli("validate", "job.yaml")
    assert done.returncode == 0, done.stderr
    assert "20 tasks (new 20); would send 20, estimated cost $0.22" in done.stdout


def test_max_cost_below_the_estimate_refuses_to_start(tmp_path: Path, cli: Cli, sim) -> None:
    skus(tmp_path, 20)
    done = cli("run", "job.yaml", "--base-url", sim.base_url, "--max-cost", "0.1")
    assert done.returncode == 2
    assert "estimated cost $0.22 is above --max-cost 0.1" in done.stderr
    assert sim.stats().requests == 0


def test_max_cost_stops_launching_once_spent(tmp_path: Path, cli: Cli, sim) -> None:
    skus(tmp_path, 20)
    # The estimate ($0.22) fits, but usage-priced answers cost a little more each.
    code, summary = cli.json("run", "job.yaml", "--base-url", sim.base_url,
                             "--max-cost", "0.23")
    assert code == 1
    assert summary["stopped"].startswith("the budget of 0.23 is spent")
    assert summary["spent"] >= 0.23
    assert summary["succeeded"] < 20
    assert summary["not_started"] == 20 - summary["succeeded"]
    assert sim.stats().requests == summary["succeeded"]
