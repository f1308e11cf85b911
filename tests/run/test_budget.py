"""Incremental nights and money: the hash cache, the estimate and --max-cost."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from tests.conftest import SHIPPED_MODELS, Cli, tiny_image, write_manifest

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
    # 20 x (272 output tokens at $40/M + (11 prompt + 194 image) input tokens at $10/M)
    assert "20 tasks (new 20); would send 20, estimated cost $0.26" in done.stdout


def test_max_cost_below_the_estimate_refuses_to_start(tmp_path: Path, cli: Cli, sim) -> None:
    skus(tmp_path, 20)
    done = cli("run", "job.yaml", "--base-url", sim.base_url, "--max-cost", "0.1")
    assert done.returncode == 2
    assert "estimated cost $0.26 is above --max-cost 0.1" in done.stderr
    assert sim.stats().requests == 0


def test_max_cost_stops_launching_once_spent(tmp_path: Path, cli: Cli, sim) -> None:
    skus(tmp_path, 20)
    # A model table that expects half the output tokens the gateway bills: the estimate
    # ($0.15) fits the budget, the answers' usage spends it before the end.
    config = tmp_path / "config"
    config.mkdir()
    table = yaml.safe_load(SHIPPED_MODELS.read_text())
    table["gpt-image-1"]["output_tokens"]["low"] = 136
    (config / "models.yaml").write_text(yaml.safe_dump(table))
    code, summary = cli.json("run", "job.yaml", "--base-url", sim.base_url,
                             "--max-cost", "0.16", "--config", str(config))
    assert code == 1
    assert summary["estimate"] < 0.16
    assert summary["stopped"].startswith("the budget of 0.16 is spent")
    assert summary["spent"] >= 0.16
    assert summary["succeeded"] < 20
    assert summary["not_started"] == 20 - summary["succeeded"]
    assert sim.stats().requests == summary["succeeded"]
