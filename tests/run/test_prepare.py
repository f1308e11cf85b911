"""`prepare:`: inputs downscaled and converted before upload, cached beside the ledger.

Real files, the CLI as a subprocess and the simulator on loopback: what the
gateway received is read back from the simulator's record of the last request.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

from PIL import Image

from pipeline.run.prepare import CACHE_FOLDER
from tests.conftest import Cli, write_manifest


def last_upload(sim) -> dict:
    with urllib.request.urlopen(sim.base_url.removesuffix("/v1") + "/_sim/last") as answer:
        return json.loads(answer.read())


def cached(folder: Path) -> list[Path]:
    return sorted((folder / CACHE_FOLDER).rglob("*.*"))


def test_a_large_cmyk_photo_goes_up_small_and_rgb(tmp_path: Path, cli: Cli, sim) -> None:
    Image.new("CMYK", (3000, 2000), (0, 80, 160, 20)).save(tmp_path / "photo.jpg", quality=95)
    write_manifest(tmp_path, """
        version: 1
        defaults: {model: gpt-image-1, quality: low, prepare: {max_side: 1024, format: jpeg}}
        tasks:
          - images: photo.jpg
            prompt: white background
        """)
    done = cli("run", "job.yaml", "--base-url", sim.base_url)
    assert done.returncode == 0, done.stderr
    [made] = cached(tmp_path)
    with Image.open(made) as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (1024, 683))
    [upload] = last_upload(sim)["files"]
    assert upload["bytes"] == made.stat().st_size and upload["content_type"] == "image/jpeg"
    assert (tmp_path / "photo.edited.png").exists()  # outputs follow the original's name
    sidecar = json.loads((tmp_path / "photo.edited.json").read_text())
    assert sidecar["inputs"] == [str(tmp_path / "photo.jpg")]

    # A re-run with other settings is a new fingerprint; the same settings reuse the cache.
    mtime = made.stat().st_mtime_ns
    again = cli("run", "job.yaml", "--base-url", sim.base_url, "--force")
    assert again.returncode == 0 and made.stat().st_mtime_ns == mtime
    job = tmp_path / "job.yaml"
    job.write_text(job.read_text().replace("max_side: 1024", "max_side: 512"))
    code, summary = cli.json("run", "job.yaml", "--base-url", sim.base_url)
    assert code == 0 and summary["plan"] == {"changed": 1}
    assert len(cached(tmp_path)) == 2


def test_sixteen_bit_png_and_a_mask_are_prepared_alike(tmp_path: Path, cli: Cli, sim) -> None:
    Image.new("I;16", (2048, 2048), 40000).save(tmp_path / "deep.png")
    mask = Image.new("RGBA", (2048, 2048), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 1024, 2048))
    mask.save(tmp_path / "mask.png")
    write_manifest(tmp_path, """
        version: 1
        tasks:
          - images: deep.png
            mask: mask.png
            prompt: recolor
            model: gpt-image-1
            quality: low
            prepare: {max_side: 1000}
        """)
    done = cli("run", "job.yaml", "--base-url", sim.base_url)
    assert done.returncode == 0, done.stderr
    made = {p.name.split(".")[-1]: p for p in cached(tmp_path)}
    files = {f["field"]: f for f in last_upload(sim)["files"]}
    assert set(files) == {"image", "mask"}
    prepared = [Image.open(p) for p in cached(tmp_path)]
    try:
        modes = sorted((i.mode, i.size) for i in prepared)
        assert modes == [("L", (1000, 1000)), ("RGBA", (1000, 1000))]
        grey = next(i for i in prepared if i.mode == "L")
        assert grey.getpixel((0, 0)) == 40000 // 256  # scaled to 8 bits, not clipped to 255
    finally:
        for image in prepared:
            image.close()
    assert len(made) == 1  # both PNG


def test_a_prepared_file_over_the_models_limit_is_refused_unsent(tmp_path: Path, cli: Cli,
                                                                  sim) -> None:
    # Noise does not compress: 1500x1500 RGB as PNG is ~6.7 MB, over dall-e-2's 4 MB.
    noise = Image.frombytes("RGB", (1500, 1500), os.urandom(1500 * 1500 * 3))
    noise.save(tmp_path / "noise.jpg", quality=100)
    write_manifest(tmp_path, """
        version: 1
        tasks:
          - images: noise.jpg
            prompt: p
            model: dall-e-2
            size: 1024x1024
            prepare: {format: png}
        """)
    assert cli("validate", "job.yaml").returncode == 0  # a JPEG for dall-e-2 is fine: prepared
    code, summary = cli.json("run", "job.yaml", "--base-url", sim.base_url)
    assert code == 1 and summary["failed"] == 1
    [failure] = summary["failures"]
    assert "prepared input breaks the model's limits" in failure["reason"]
    assert "takes at most 4 MiB" in failure["reason"]
    assert sim.stats().requests == 0


def test_prepare_settings_are_checked(tmp_path: Path, cli: Cli) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    write_manifest(tmp_path, """
        version: 1
        tasks:
          - images: a.png
            prompt: p
            prepare: {max_side: 10, format: gif, qualty: 3}
        """)
    done = cli("validate", "job.yaml")
    assert done.returncode == 2
    assert ("job.yaml:5: tasks[0].prepare: unknown key 'qualty'; did you mean 'quality'?"
            in done.stderr)


def test_a_cache_that_cannot_be_written_fails_the_task_for_now(tmp_path: Path, cli: Cli,
                                                               sim) -> None:
    Image.new("RGB", (300, 200)).save(tmp_path / "a.png")
    write_manifest(tmp_path, """
        version: 1
        tasks:
          - {images: a.png, prompt: p, model: gpt-image-1, prepare: {format: jpeg}}
        """)
    (tmp_path / CACHE_FOLDER).write_text("a file where the cache folder goes")
    code, summary = cli.json("run", "job.yaml", "--base-url", sim.base_url)
    assert code == 1 and sim.stats().requests == 0
    assert "cannot write the prepared file" in summary["failures"][0]["reason"]
    (tmp_path / CACHE_FOLDER).unlink()
    code, summary = cli.json("run", "job.yaml", "--base-url", sim.base_url)  # not terminal
    assert (code, summary["succeeded"]) == (0, 1)


def test_prepare_waives_what_it_converts_not_a_damaged_file(tmp_path: Path, cli: Cli) -> None:
    Image.new("RGB", (400, 300), (10, 200, 30)).save(tmp_path / "whole.jpg", quality=95)
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    Image.new("CMYK", (40, 30)).save(tmp_path / "cmyk.jpg")
    Image.new("RGB", (40, 30)).save(tmp_path / "png-named.jpg", "PNG")
    write_manifest(tmp_path, """
        version: 1
        defaults: {model: gpt-image-1}
        tasks:
          - {images: cut.jpg, prompt: p, prepare: {max_side: 100}}
          - {images: cmyk.jpg, prompt: p, prepare: {max_side: 100}}
          - {images: png-named.jpg, prompt: p, prepare: {format: jpeg}}
          - {images: cmyk.jpg, prompt: p, id: as-is, output: "as-is.{ext}"}
        """)
    done = cli("validate", "job.yaml")
    assert done.returncode == 2
    problems = [line for line in done.stderr.splitlines() if line.startswith("  ")]
    assert len(problems) == 2, done.stderr
    assert "cut.jpg is damaged or cut short" in problems[0]  # prepare cannot mend that
    assert "cmyk.jpg is CMYK" in problems[1] and "(task 'as-is')" in problems[1]
