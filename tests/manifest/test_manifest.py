"""Manifest loading, expansion and the check pass, on real YAML, CSV and image files."""

from __future__ import annotations

import inspect
import itertools
import os
import textwrap
import tracemalloc
from pathlib import Path

import pytest

from pipeline.config.models import Models
from pipeline.errors import ManifestError
from pipeline.manifest.load import Manifest, load
from pipeline.manifest.preflight import ValidationReport, check_all, validate
from tests.conftest import image


def write(folder: Path, text: str, name: str = "manifest.yaml") -> Path:
    """The manifest text as written in the test, first line = line 1."""
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems(path: Path, models: Models) -> list[str]:
    """Every problem load + check_all report, as `file:line: field: message` strings."""
    with pytest.raises(ManifestError) as caught:
        check_all(load(path, models), models)
    return [str(p) for p in caught.value.problems]


def one(found: list[str], *parts: str) -> str:
    """The single problem containing every part: asserts there is exactly one."""
    hits = [p for p in found if all(part in p for part in parts)]
    assert len(hits) == 1, f"{parts} in:\n" + "\n".join(found)
    return hits[0]


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """The DESIGN.md example's files: products, a mask, a catalog with a CSV."""
    image(tmp_path / "products/incense-kit.png", (64, 64))
    image(tmp_path / "products/soap.png", (64, 64))
    image(tmp_path / "products/shirt.jpg", (64, 64), fmt="JPEG")
    image(tmp_path / "products/shirt-mask.png", (64, 64), "RGBA")
    image(tmp_path / "catalog/b.jpg", fmt="JPEG")
    image(tmp_path / "catalog/a/z.jpg", fmt="JPEG")
    image(tmp_path / "catalog/a.jpg", fmt="JPEG")
    image(tmp_path / "catalog/A1.jpg", fmt="JPEG")
    image(tmp_path / "catalog/B2.jpg", fmt="JPEG")
    (tmp_path / "catalog/skus.csv").write_text("sku,color\nA1,navy\nB2,red\n")
    return tmp_path


DESIGN = """
    version: 1
    provider: wenwen
    defaults:
      model: gpt-image-1
      quality: high
      size: 1024x1024
      output: "{dir}/{stem}.edited.{ext}"
    limits: {concurrency: 8, rate: 30/min, retries: 5}
    tasks:
      - id: gift-basket
        images: [products/incense-kit.png, products/soap.png]
        prompt: 创建一个包含这两个物品的精美礼品篮
      - images: products/shirt.jpg
        mask: products/shirt-mask.png
        prompt: Recolor the shirt navy blue
        quality: low
      - glob: "catalog/**/*.jpg"
        prompt: Put the product on a pure white background with a soft shadow
        n: 2
      - csv: catalog/skus.csv
        images: "catalog/{sku}.jpg"
        prompt: "Recolor the product to {color}"
        id: "{sku}-{color}"
        output: "out/{sku}-{color}.{ext}"
    """


# ---- a good manifest ----


def test_design_example_loads_expands_and_estimates(shop: Path, models: Models) -> None:
    manifest = load(write(shop, DESIGN), models)
    assert isinstance(manifest, Manifest)
    assert manifest.path == shop / "manifest.yaml" and manifest.root == shop
    assert (manifest.version, manifest.provider, manifest.allow_outside) == (1, "wenwen", False)
    assert dict(manifest.limits) == {"concurrency": 8, "rate": "30/min", "retries": 5}
    tasks = list(manifest.tasks())
    assert [t.id for t in tasks] == [
        "gift-basket", "products/shirt.jpg",
        "catalog/A1.jpg", "catalog/B2.jpg", "catalog/a/z.jpg", "catalog/a.jpg", "catalog/b.jpg",
        "A1-navy", "B2-red",
    ]
    gift, shirt, glob_first = tasks[0], tasks[1], tasks[2]
    assert gift.images == (shop / "products/incense-kit.png", shop / "products/soap.png")
    assert gift.prompt == "创建一个包含这两个物品的精美礼品篮"
    assert gift.where.line == 10 and str(gift.where).endswith("manifest.yaml:10")
    assert dict(gift.fields) == {"model": "gpt-image-1", "quality": "high", "size": "1024x1024"}
    assert shirt.mask == shop / "products/shirt-mask.png"
    assert shirt.fields["quality"] == "low"  # the task's own key wins over defaults
    assert shirt.output_path(0, "png") == shop / "products/shirt.edited.png"
    assert glob_first.n == 2 and glob_first.where.line == 17
    assert tasks[7].prompt == "Recolor the product to navy"
    assert tasks[7].images == (shop / "catalog/A1.jpg",)
    assert tasks[7].output_path(0, "webp") == shop / "out/A1-navy.webp"

    report = check_all(manifest, models)
    # high 1024: gift 0.167 + glob 5 tasks x n=2 x 0.167; low: shirt 0.011; csv 2 x 0.167
    assert isinstance(report, ValidationReport)
    assert (report.tasks, report.images, report.outputs) == (9, 10, 14)
    assert report.by_model == {"gpt-image-1": 9}
    # 13 x high 1024x1024 (4160 output tokens at $40/M) + 1 low (272), plus every task's
    # input tokens (its images and prompt, at $10/M): 2.174 of output, 0.021 of input.
    assert report.cost == pytest.approx(2.1945, abs=1e-4)
    assert report.cost_by_model["gpt-image-1"] == pytest.approx(2.1945, abs=1e-4)


def test_default_model_comes_from_the_caller(tmp_path: Path, models: Models) -> None:
    image(tmp_path / "a.png")
    path = write(tmp_path, """
        version: 1
        tasks:
          - {images: a.png, prompt: p}
        """)
    manifest = load(path, models, default_model="gpt-image-1-mini")
    assert manifest.provider is None and manifest.allow_outside is False
    [task] = manifest.tasks()
    assert dict(task.fields) == {"model": "gpt-image-1-mini"}
    assert task.id == "a.png"
    assert task.placeholders == {"dir": ".", "stem": "a", "model": "gpt-image-1-mini"}
    assert task.output_path(0, "png") == tmp_path / "a.edited.png"


# ---- YAML and top level ----


def test_yaml_syntax_error_names_the_line(tmp_path: Path, models: Models) -> None:
    path = write(tmp_path, """
        version: 1
        tasks:
          - images: [a.png
            prompt: p
        """)
    with pytest.raises(ManifestError) as caught:
        load(path, models)
    [problem] = caught.value.problems
    assert problem.where.line == 4 and problem.field == "yaml"
    assert "not valid YAML" in str(problem) and "manifest.yaml:4" in str(problem)


@pytest.mark.parametrize(("text", "line", "field", "words"), [
    ("- just\n- a list\n", 1, "manifest", "expected a mapping"),
    ("tasks: [{images: a.png, prompt: p}]\n", 1, "version", "missing: add `version: 1`"),
    ("\n\nversion: 2\ntasks: [{images: a.png, prompt: p}]\n", 3, "version", "2 is not supported"),
    ("version: 1\n", 1, "tasks", "missing"),
    ("version: 1\ntasks: {a: 1}\n", 2, "tasks", "expected a list"),
    ("version: 1\ntasks: []\n", 2, "tasks", "the list is empty"),
    ("version: 1\nallow_outside: yes please\ntasks: [{images: a.png, prompt: p}]\n", 2,
     "allow_outside", "expected true or false"),
])
def test_top_level_problems(tmp_path: Path, models: Models, text: str, line: int, field: str,
                            words: str) -> None:
    (tmp_path / "manifest.yaml").write_text(text)
    with pytest.raises(ManifestError) as caught:
        load(tmp_path / "manifest.yaml", models)
    assert [(p.where.line, p.field) for p in caught.value.problems] == [(line, field)]
    assert words in caught.value.problems[0].message


def test_unreadable_manifest(tmp_path: Path, models: Models) -> None:
    with pytest.raises(ManifestError, match="file not found"):
        load(tmp_path / "nope.yaml", models)
    (tmp_path / "latin.yaml").write_bytes(b"version: 1\nprompt: caf\xe9\n")
    with pytest.raises(ManifestError, match="not UTF-8"):
        load(tmp_path / "latin.yaml", models)


def test_unknown_keys_everywhere_with_did_you_mean(tmp_path: Path, models: Models) -> None:
    path = write(tmp_path, """
        version: 1
        task: []
        defaults:
          qualty: high
        limits:
          concurency: 3
        tasks:
          - images: a.png
            promt: hello
            prompt: hi
        """)
    with pytest.raises(ManifestError) as caught:
        load(path, models)
    found = [str(p) for p in caught.value.problems]
    assert len(found) == 4, found  # every problem at once, from every level
    one(found, "manifest.yaml:2: task: unknown key 'task'; did you mean 'tasks'?")
    one(found, "manifest.yaml:4: defaults.qualty: unknown key 'qualty'; did you mean 'quality'?")
    one(found, "manifest.yaml:6: limits.concurency:", "did you mean 'concurrency'?")
    one(found, "manifest.yaml:9: tasks[0].promt: unknown key 'promt'; did you mean 'prompt'?")


def test_a_key_written_twice_is_a_problem(tmp_path: Path, models: Models) -> None:
    path = write(tmp_path, """
        version: 1
        tasks:
          - images: a.png
            prompt: one
            prompt: two
        """)
    with pytest.raises(ManifestError) as caught:
        load(path, models)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:5: prompt: written twice (first at line 4); YAML keeps only the last: remove one"
    ]


def test_wrong_types_in_defaults_limits_and_tasks(tmp_path: Path, models: Models) -> None:
    image(tmp_path / "a.png")
    path = write(tmp_path, """
        version: 1
        defaults:
          n: 0
          background: clear
        limits:
          concurrency: 0
          rate: fast
          retries: -1
          timeout: 0
        tasks:
          - images: a.png
            prompt: p
            n: two
            output_compression: 101
            size: big
            images_extra: 1
        """)
    with pytest.raises(ManifestError) as caught:
        load(path, models)
    found = [str(p) for p in caught.value.problems]
    one(found, ":3: defaults.n: 0 must be a whole number from 1 to 10")
    one(found, ":4: defaults.background: 'clear' is not one of: transparent, opaque, auto")
    one(found, ":6: limits.concurrency: 0 must be a whole number of at least 1")
    one(found, ":7: limits.rate:", "not like '30/min'")
    one(found, ":8: limits.retries: -1 must be a whole number of at least 0")
    one(found, ":9: limits.timeout: 0 must be a number of seconds above 0")
    one(found, ":13: tasks[0].n: 'two' must be a whole number")
    one(found, ":14: tasks[0].output_compression: 101 must be a whole number from 0 to 100")
    one(found, ":15: tasks[0].size: 'big' is not like 1024x1024 or auto")
    one(found, ":16: tasks[0].images_extra: unknown key", "did you mean 'images'?")
    assert len(found) == 10


def test_missing_prompt_and_images(tmp_path: Path, models: Models) -> None:
    image(tmp_path / "a.png")
    path = write(tmp_path, """
        version: 1
        tasks:
          - images: a.png
          - prompt: nothing to edit
          - just text
        """)
    found = problems(path, models)
    assert found == [
        f"{path}:3: tasks[0].prompt: missing: say what to do with the images",
        f"{path}:4: tasks[1].images: missing: give the file(s) to edit",
        f"{path}:5: tasks[2]: expected a mapping like {{images: shirt.jpg, prompt: ...}}",
    ]


def test_tasks_refuses_to_stream_a_broken_manifest(tmp_path: Path, models: Models) -> None:
    path = write(tmp_path, """
        version: 1
        tasks:
          - {images: missing.png, prompt: p, colour: red}
        """)
    manifest = load(path, models)  # entry problems are the check pass's to report, all at once
    with pytest.raises(ManifestError, match="unknown key 'colour'"):
        list(manifest.tasks())


# ---- files ----


def test_missing_unreadable_and_non_image_files(tmp_path: Path, models: Models) -> None:
    image(tmp_path / "ok.png")
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "folder.png").mkdir()
    path = write(tmp_path, """
        version: 1
        tasks:
          - images: [ok.png, gone.png]
            prompt: p
          - images: text.png
            prompt: p
          - images: ok.png
            mask: empty.png
            prompt: p
            output: "{stem}.second.{ext}"
          - images: folder.png
            prompt: p
        """)
    found = problems(path, models)
    assert found == [
        f"{path}:3: tasks[0].images: file not found: {tmp_path}/gone.png (task 'ok.png')",
        f"{path}:5: tasks[1].images: {tmp_path}/text.png is not a PNG, JPEG or WebP image "
        "(task 'text.png')",
        f"{path}:8: tasks[2].mask: {tmp_path}/empty.png is empty (0 bytes) (task 'ok.png#2')",
        f"{path}:11: tasks[3].images: {tmp_path}/folder.png is a folder, not a file "
        "(task 'folder.png')",
    ]


# ---- glob ----


def test_glob_is_recursive_sorted_and_skips_hidden_files(tmp_path: Path, models: Models) -> None:
    for name in ["b.jpg", "a/z.jpg", "a/y/x.jpg", "a.jpg", "c.png", ".hidden/h.jpg", "._a.jpg"]:
        image(tmp_path / "cat" / name, fmt="JPEG")
    image(tmp_path / "logo.png")
    path = write(tmp_path, """
        version: 1
        tasks:
          - glob: "cat/**/*.jpg"
            images: logo.png
            prompt: p
          - glob: "cat/*.jpg"
            prompt: q
            id: "flat/{stem}"
            output: "flat/{stem}.{ext}"
        """)
    tasks = list(load(path, models).tasks())
    assert [t.id for t in tasks] == [
        "cat/a/y/x.jpg", "cat/a/z.jpg", "cat/a.jpg", "cat/b.jpg", "flat/a", "flat/b"]
    expected = sorted(p for p in (tmp_path / "cat").glob("**/*.jpg") if "/." not in str(p))
    assert [t.images[0] for t in tasks[:4]] == expected
    assert tasks[0].images == (tmp_path / "cat/a/y/x.jpg", tmp_path / "logo.png")
    assert tasks[0].placeholders == {"dir": "cat/a/y", "stem": "x", "model": "gpt-image-1"}
    assert all(t.where.line == 3 for t in tasks[:4])
    assert check_all(load(path, models), models).tasks == 6


def test_glob_that_matches_nothing_is_a_warning(tmp_path: Path, models: Models) -> None:
    image(tmp_path / "a.png")
    path = write(tmp_path, """
        version: 1
        defaults: {prompt: p}
        tasks:
          - glob: "photos/*.jpg"
          - images: a.png
        """)
    manifest = load(path, models)
    assert [t.id for t in manifest.tasks()] == ["a.png"]
    report = check_all(manifest, models)
    assert report.tasks == 1
    assert [str(w) for w in report.warnings] == [
        f"{path}:4: tasks[0].glob: 'photos/*.jpg' matches no files under {tmp_path}: "
        "nothing to do here"]


def test_glob_extensions_match_in_any_case_and_jpg_means_jpeg(tmp_path: Path,
                                                              models: Models) -> None:
    for name in ["DSC_0042.JPG", "studio shot.jpeg", "b.Jpg", "c.png", "d.jpg.txt"]:
        image(tmp_path / "in" / name, fmt="JPEG")
    path = write(tmp_path, """
        version: 1
        tasks:
          - glob: "in/*.jpg"
            prompt: p
          - glob: "in/*.PNG"
            prompt: q
        """)
    ids = [t.id for t in load(path, models).tasks()]
    assert ids == ["in/DSC_0042.JPG", "in/b.Jpg", "in/studio shot.jpeg", "in/c.png"]


def test_glob_takes_a_list_of_patterns_and_exclude(tmp_path: Path, models: Models) -> None:
    for name in ["shoes/a.jpg", "shoes/a-mask.png", "bags/b.png", "bags/old/c.png", "x.webp"]:
        image(tmp_path / name, fmt="PNG")
    path = write(tmp_path, """
        version: 1
        tasks:
          - glob: ["**/*.png", "shoes/*.jpg", "bags/*.png"]
            exclude: ["*-mask.png", "bags/old/**"]
            prompt: p
        """)
    ids = [t.id for t in load(path, models).tasks()]
    assert ids == ["bags/b.png", "shoes/a.jpg"]  # sorted, each once, exclusions left out


def test_exclude_needs_a_glob_and_patterns_must_be_text(tmp_path: Path, models: Models) -> None:
    image(tmp_path / "a.png")
    path = write(tmp_path, """
        version: 1
        tasks:
          - images: a.png
            exclude: "*.png"
            prompt: p
          - glob: ["*.png", 3]
            prompt: p
        """)
    found = problems(path, models)
    one(found, ":4: tasks[0].exclude: exclude leaves files out of a glob")
    one(found, ":6: tasks[1].glob: expected a pattern or a list of patterns")


# ---- models: one task per model ----


def test_models_make_one_task_per_model(tmp_path: Path, models: Models) -> None:
    image(tmp_path / "shoes/a.png")
    image(tmp_path / "shoes/b.png")
    path = write(tmp_path, """
        version: 1
        defaults: {quality: auto, models: [gpt-image-1, gemini-2.5-flash-image]}
        tasks:
          - glob: "shoes/*.png"
            prompt: p
          - id: hero
            images: shoes/a.png
            prompt: q
            output: "compare/{id}.{ext}"
          - id: single
            images: shoes/b.png
            model: gpt-image-1-mini
            prompt: r
            output: "single.{ext}"
        """)
    manifest = load(path, models)
    tasks = list(manifest.tasks())
    assert [(t.id, t.model) for t in tasks] == [
        ("shoes/a.png@gpt-image-1", "gpt-image-1"),
        ("shoes/a.png@gemini-2.5-flash-image", "gemini-2.5-flash-image"),
        ("shoes/b.png@gpt-image-1", "gpt-image-1"),
        ("shoes/b.png@gemini-2.5-flash-image", "gemini-2.5-flash-image"),
        ("hero@gpt-image-1", "gpt-image-1"),
        ("hero@gemini-2.5-flash-image", "gemini-2.5-flash-image"),
        ("single", "gpt-image-1-mini"),  # a task's own model wins over defaults' models
    ]
    assert tasks[0].output_path(0, "png") == tmp_path / "shoes/a.gpt-image-1.edited.png"
    assert tasks[5].output_path(0, "png") == tmp_path / "compare/hero@gemini-2.5-flash-image.png"
    # Defaults apply per model: a default the model does not take is left out of its task.
    for task in tasks:
        if task.model.startswith("gemini"):
            assert "quality" not in task.fields and task.left_out == ("quality",)
        else:
            assert task.fields["quality"] == "auto" and task.left_out == ()
    report = check_all(manifest, models)
    assert report.by_model == {"gpt-image-1": 3, "gemini-2.5-flash-image": 3,
                               "gpt-image-1-mini": 1}


def test_models_go_through_each_models_checks(tmp_path: Path, models: Models) -> None:
    image(tmp_path / "a.png")
    image(tmp_path / "mask.png", mode="RGBA")
    path = write(tmp_path, """
        version: 1
        tasks:
          - images: a.png
            mask: mask.png
            prompt: p
            models: [gpt-image-1, gemini-2.5-flash-image, gpt-imag-2]
          - images: a.png
            prompt: p
            model: gpt-image-1
            models: [gpt-image-1]
          - images: a.png
            prompt: p
            models: [gpt-image-1, gpt-image-1-mini]
            output: "{stem}.out.{ext}"
        """)
    found = problems(path, models)
    one(found, ":4: tasks[0].mask: gemini-2.5-flash-image takes no mask")
    one(found, ":6: tasks[0].model: unknown model 'gpt-imag-2'")
    one(found, ":10: tasks[1].models: give model or models, not both")
    one(found, ":14: tasks[2].output: output '{stem}.out.{ext}' has no {model}")


# ---- YAML syntax ----


@pytest.mark.parametrize(("text", "where", "hint"), [
    ("version: 1\ntasks:\n\t- images: a.png\n", ":3:1:",
     "YAML does not allow tabs for indentation; use spaces"),
    ("version: 1\ntasks:\n  - prompt: Recolor: navy\n", ":3:20:",
     "a value that contains ': ' must be quoted"),
    ("version: 1\ntasks:\n  - prompt: 'navy\n", ":4:1:", "a quote opened here is never closed"),
])
def test_yaml_errors_have_a_column_and_a_hint(tmp_path: Path, models: Models, text: str,
                                              where: str, hint: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError) as caught:
        load(path, models)
    [problem] = caught.value.problems
    assert f"{path}{where} yaml: not valid YAML: {hint}" in str(problem)


def test_glob_id_must_differ_per_file(tmp_path: Path, models: Models) -> None:
    image(tmp_path / "a.png")
    path = write(tmp_path, """
        version: 1
        tasks:
          - glob: "*.png"
            prompt: p
            id: same
        """)
    with pytest.raises(ManifestError, match=r":5: tasks\[0\].id: a glob entry's id must use"):
        check_all(load(path, models), models)


# ---- csv ----


def test_csv_with_bom_quotes_and_multiline_cells(tmp_path: Path, models: Models) -> None:
    for sku in ("A1", "B2", "C3"):
        image(tmp_path / f"catalog/{sku}.jpg", fmt="JPEG")
    (tmp_path / "catalog/skus.csv").write_bytes(
        "\ufeffsku,color,note\r\n"
        'A1,"navy, dark",plain\r\n'
        "\r\n"
        'B2,red,"two\r\nlines"\r\n'
        'C3,"say ""hi""",x\r\n'.encode()
    )
    path = write(tmp_path, """
        version: 1
        defaults:
          output: "out/{sku}/{color}-{index}.{ext}"
        tasks:
          - csv: catalog/skus.csv
            images: "catalog/{sku}.jpg"
            prompt: "Recolor to {color}"
            id: "{sku}-{stem}"
            n: 2
        """)
    tasks = list(load(path, models).tasks())
    assert [t.id for t in tasks] == ["A1-A1", "B2-B2", "C3-C3"]
    assert [t.prompt for t in tasks] == ["Recolor to navy, dark", "Recolor to red",
                                         'Recolor to say "hi"']
    assert tasks[0].placeholders["note"] == "plain"
    assert tasks[1].placeholders["note"] == "two\r\nlines"  # a quoted line break is kept
    assert tasks[0].output_path(1, "png") == tmp_path / "out/A1/navy, dark-1.png"
    assert tasks[0].where.line == 5
    assert check_all(load(path, models), models).outputs == 6


def test_csv_cells_fill_request_fields(tmp_path: Path, models: Models) -> None:
    image(tmp_path / "a.png")
    (tmp_path / "rows.csv").write_text("name,count,q\na,3,low\n")
    path = write(tmp_path, """
        version: 1
        tasks:
          - csv: rows.csv
            images: "{name}.png"
            prompt: p
            n: "{count}"
            quality: "{q}"
        """)
    [task] = load(path, models).tasks()
    assert task.n == 3 and task.fields["quality"] == "low"
    assert task.output_path(2, "png") == tmp_path / "a.edited-2.png"


def test_csv_missing_column_empty_cell_and_extra_cells(tmp_path: Path, models: Models) -> None:
    image(tmp_path / "A1.jpg", fmt="JPEG")
    (tmp_path / "skus.csv").write_text("sku,color\nA1,navy\n,red\nA1,\nA1,navy,oops\n")
    (tmp_path / "short.csv").write_text("sku\nA1\n")
    path = write(tmp_path, """
        version: 1
        tasks:
          - csv: skus.csv
            images: "{sku}.jpg"
            prompt: "Recolor to {color}"
            id: "{sku}-{color}"
          - csv: short.csv
            images: "{sku}.jpg"
            prompt: "Recolor to {colour}"
          - csv: none.csv
            images: "{sku}.jpg"
            prompt: p
        """)
    csv, short = tmp_path / "skus.csv", tmp_path / "short.csv"
    assert problems(path, models) == [
        f"{csv}:3: tasks[0].images: column 'sku' is empty in this row, and images uses {{sku}}: "
        "fill the cell",
        f"{csv}:4: tasks[0].prompt: column 'color' is empty in this row, and prompt uses "
        "{color}: fill the cell",
        f"{csv}:5: tasks[0].csv: 1 more cell(s) than the header names: quote values that "
        "contain commas",
        f"{short}:1: tasks[1].prompt: uses {{colour}} but the CSV has no column 'colour' "
        "(columns: sku)",
        f"{path}:10: tasks[2].csv: file not found: {tmp_path}/none.csv",
    ]


def test_csv_that_is_not_utf8_or_has_a_doubled_column(tmp_path: Path, models: Models) -> None:
    (tmp_path / "latin.csv").write_bytes(b"sku,color\nA1,navy\nA2,caf\xe9\n")
    (tmp_path / "twice.csv").write_text("sku,sku\nA1,A2\n")
    path = write(tmp_path, """
        version: 1
        defaults: {images: "{sku}.jpg", prompt: p}
        tasks:
          - csv: latin.csv
          - csv: twice.csv
        """)
    with pytest.raises(ManifestError) as caught:  # images in defaults: a per-task key
        load(path, models)
    one([str(p) for p in caught.value.problems], ":2: defaults.images: unknown key")
    path = write(tmp_path, """
        version: 1
        defaults: {prompt: p}
        tasks:
          - {csv: latin.csv, images: "{sku}.jpg"}
          - {csv: twice.csv, images: "{sku}.jpg"}
        """)
    found = problems(path, models)
    one(found, f"{tmp_path}/latin.csv:3: tasks[0].csv: not UTF-8 text", "save it as 'CSV UTF-8'")
    one(found, f"{tmp_path}/twice.csv:1: tasks[1].csv: column 'sku' appears twice in the header")


def test_csv_rows_that_reuse_an_image_get_numbered_ids(tmp_path: Path, models: Models) -> None:
    image(tmp_path / "A1.jpg", fmt="JPEG")
    (tmp_path / "skus.csv").write_text("sku,color\nA1,navy\nA1,red\nA1,teal\n")
    path = write(tmp_path, """
        version: 1
        tasks:
          - csv: skus.csv
            images: "{sku}.jpg"
            prompt: "Recolor to {color}"
            output: "{stem}-{color}.{ext}"
        """)
    assert [t.id for t in load(path, models).tasks()] == ["A1.jpg", "A1.jpg#2", "A1.jpg#3"]
    assert check_all(load(path, models), models).tasks == 3


# ---- ids ----


def test_derived_ids_and_duplicates_naming_both_places(tmp_path: Path, models: Models) -> None:
    image(tmp_path / "products/shirt.jpg", fmt="JPEG")
    path = write(tmp_path, """
        version: 1
        tasks:
          - images: products/shirt.jpg
            prompt: navy
            output: "{stem}.navy.{ext}"
          - images: products/shirt.jpg
            prompt: red
            output: "{stem}.red.{ext}"
          - id: hero
            images: products/shirt.jpg
            prompt: a
            output: "{id}-a.{ext}"
          - id: hero
            images: products/shirt.jpg
            prompt: b
            output: "{id}-b.{ext}"
        """)
    manifest = load(path, models)
    assert [t.id for t in manifest.tasks()] == [
        "products/shirt.jpg", "products/shirt.jpg#2", "hero", "hero"]
    assert problems(path, models) == [
        f"{path}:13: tasks[3].id: duplicate id 'hero': also at {path}:9; give each task its "
        "own id (task 'hero')"]


# ---- outputs ----


def test_outputs_that_collide_name_both_tasks(tmp_path: Path, models: Models) -> None:
    image(tmp_path / "a.png")
    image(tmp_path / "b.png")
    path = write(tmp_path, """
        version: 1
        defaults:
          output: "out/result.{ext}"
        tasks:
          - {id: first, images: a.png, prompt: p}
          - {id: second, images: b.png, prompt: p}
        """)
    assert problems(path, models) == [
        f"{path}:3: tasks[1].output: {tmp_path}/out/result.png: task 'first' (at {path}:5) "
        "writes to the same name, so one would overwrite the other's image or .json sidecar: "
        "give them different outputs (task 'second')"]


def test_outputs_that_share_a_sidecar_collide(tmp_path: Path, models: Models) -> None:
    image(tmp_path / "a.png")
    path = write(tmp_path, """
        version: 1
        tasks:
          - {id: one, images: a.png, prompt: p, output: "out/x.png"}
          - {id: two, images: a.png, prompt: q, output: "out/x.jpg"}
          - {id: three, images: a.png, prompt: r, output: "out/y.png"}
          - {id: four, images: a.png, prompt: s, output: "out/y-{index}.{ext}", n: 2}
        """)
    found = problems(path, models)
    one(found, ":4: tasks[1].output:", "out/x.jpg: task 'one' (at", "writes to the same name")
    assert len(found) == 1  # y.png and y-0.png / y-1.png are different names


def test_a_new_format_beside_an_input_is_no_collision(tmp_path: Path, models: Models) -> None:
    image(tmp_path / "a.jpg", fmt="JPEG")
    path = write(tmp_path, """
        version: 1
        tasks:
          - {images: a.jpg, prompt: p, output: "{stem}.{ext}"}
          - {images: a.jpg, prompt: q, output: "{stem}.second.{ext}"}
        """)
    # a.png, a.jpeg or a.webp never overwrite a.jpg, which the second task reads.
    assert check_all(load(path, models), models).tasks == 2


def test_output_over_an_input(tmp_path: Path, models: Models) -> None:
    for name in ("a.png", "b.png", "b.edited.png", "c.edited.png", "c.png"):
        image(tmp_path / name)
    path = write(tmp_path, """
        version: 1
        tasks:
          - images: a.png
            prompt: writes over its own input
            output: "{stem}.{ext}"
          - images: b.png
            prompt: writes b.edited.png, which the next task reads
          - images: b.edited.png
            prompt: p
            output: x.{ext}
          - images: c.edited.png
            prompt: read before the next task writes it
            output: y.{ext}
          - images: c.png
            prompt: p
        """)
    assert problems(path, models) == [
        f"{path}:5: tasks[0].output: {tmp_path}/a.png would overwrite this task's own input: "
        "add something like '.edited' to the output template (task 'a.png')",
        f"{path}:8: tasks[2].images: task 'b.png' writes its output to {tmp_path}/b.edited.png,"
        " an input here: change that task's output template (task 'b.edited.png')",
        f"{path}:14: tasks[4].output: {tmp_path}/c.edited.png would overwrite an input of task "
        "'c.edited.png': change the output template (task 'c.png')",
    ]


def test_output_outside_the_tree_and_allow_outside(tmp_path: Path, models: Models) -> None:
    job = tmp_path / "job"
    image(job / "a.png")
    text = """
        version: 1
        tasks:
          - images: a.png
            prompt: p
            output: "../elsewhere/{stem}.{ext}"
        """
    path = write(job, text)
    assert problems(path, models) == [
        f"{path}:5: tasks[0].output: {tmp_path}/elsewhere/a.png is outside the manifest's folder "
        f"{job}: change the output template, or set allow_outside: true (task 'a.png')"]
    write(job, "allow_outside: true\n" + textwrap.dedent(text).lstrip("\n"))
    assert check_all(load(path, models), models).tasks == 1


def test_output_through_a_folder_link_is_outside(tmp_path: Path, models: Models) -> None:
    job = tmp_path / "job"
    image(job / "a.png")
    (tmp_path / "elsewhere").mkdir()
    (job / "out").symlink_to(tmp_path / "elsewhere")
    path = write(job, """
        version: 1
        tasks:
          - {images: a.png, prompt: p, output: "out/{stem}.{ext}"}
        """)
    one(problems(path, models), "is outside the manifest's folder")


def test_n_outputs_get_an_index(tmp_path: Path, models: Models) -> None:
    image(tmp_path / "a.png")
    image(tmp_path / "b.png")
    path = write(tmp_path, """
        version: 1
        tasks:
          - {images: a.png, prompt: p, n: 3}
          - {images: b.png, prompt: p, n: 2, output: "out/{stem}_{index}.{ext}"}
        """)
    a, b = load(path, models).tasks()
    assert [a.output_path(i, "png").name for i in range(3)] == [
        "a.edited-0.png", "a.edited-1.png", "a.edited-2.png"]
    assert b.output_path(1, "jpeg") == tmp_path / "out/b_1.jpeg"
    report = check_all(load(path, models), models)
    assert (report.tasks, report.outputs) == (2, 5)


def test_unknown_placeholder_in_the_output_template(tmp_path: Path, models: Models) -> None:
    for name in "abc":
        image(tmp_path / f"{name}.png")
    path = write(tmp_path, """
        version: 1
        defaults:
          output: "{folder}/{stem}.{ext}"
        tasks:
          - glob: "*.png"
            prompt: p
        """)
    # One entry, three tasks, one problem: the same mistake is said once.
    assert problems(path, models) == [
        f"{path}:3: tasks[0].output: output template '{{folder}}/{{stem}}.{{ext}}' uses "
        "{folder}, which is not known here; use {dir}, {ext}, {id}, {index}, {model}, {stem} "
        "(task 'a.png' and 2 more)"]


# ---- model limits ----


def test_model_limits_are_reported_per_task_with_their_line(tmp_path: Path, models: Models) -> None:
    image(tmp_path / "a.png")
    image(tmp_path / "wide.png", (20, 10))
    image(tmp_path / "photo.jpg", fmt="JPEG")
    image(tmp_path / "mask.png", (8, 8), "RGBA")
    path = write(tmp_path, """
        version: 1
        defaults:
          size: 1536x1024
        tasks:
          - images: [a.png, photo.jpg]
            prompt: p
            model: dall-e-2
            output: "one/{stem}.{ext}"
          - images: wide.png
            prompt: p
            model: dall-e-2
            size: 512x512
          - images: a.png
            prompt: p
            model: gpt-image-1
            response_format: url
            output: "three/{stem}.{ext}"
          - images: a.png
            model: dall-e-3
            prompt: p
            output: "four/{stem}.{ext}"
          - images: a.png
            mask: mask.png
            prompt: p
            model: jimeng-4.0
            output: "five/{stem}.{ext}"
        """)
    found = problems(path, models)
    one(found, ":5: tasks[0].images: 2 images, but dall-e-2 takes at most 1")
    one(found, ":5: tasks[0].images[1]:", "photo.jpg is jpeg; dall-e-2 takes png")
    # A default another model takes is left out for dall-e-2, not an error ("Defaults are
    # defaults"); tasks[1] sets its own size.
    assert not [line for line in found if "tasks[0].size" in line]
    one(found, ":9: tasks[1].images:", "wide.png is 20x10; dall-e-2 takes only square images")
    one(found, ":16: tasks[2].response_format: gpt-image-1 refuses response_format")
    one(found, ":19: tasks[3].model: dall-e-3 cannot edit images")
    one(found, ":25: tasks[4].model: jimeng-4.0 cannot edit here",
        "does not carry the input images")
    assert len(found) == 6


def test_an_inherited_mistake_is_said_once_per_entry(tmp_path: Path, models: Models) -> None:
    for i in range(5):
        image(tmp_path / f"p/{i}.png")
    path = write(tmp_path, """
        version: 1
        defaults:
          quality: ultra
        tasks:
          - glob: "p/*.png"
            prompt: p
        """)
    assert problems(path, models) == [
        f"{path}:3: tasks[0].quality: gpt-image-1 does not take quality 'ultra'; use one of: "
        "low, medium, high, auto (task 'p/0.png' and 4 more)"]


def test_validate_streams_problems_without_raising(tmp_path: Path, models: Models) -> None:
    image(tmp_path / "a.png")
    path = write(tmp_path, """
        version: 1
        tasks:
          - {images: a.png, prompt: p}
          - {images: b.png, prompt: p}
        """)
    manifest = load(path, models)
    assert inspect.isgenerator(validate(manifest, models))
    first, second = validate(manifest, models)
    assert first.task is not None and first.problems == ()
    assert second.task is not None and [p.field for p in second.problems] == ["tasks[1].images"]


def test_problem_list_is_capped(tmp_path: Path, models: Models) -> None:
    lines = ["version: 1", "tasks:"] + [f"  - {{images: m{i}.png, prompt: p}}" for i in range(8)]
    path = tmp_path / "manifest.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError) as caught:
        check_all(load(path, models), models, max_problems=5)
    found = caught.value.problems
    assert len(found) == 6 and found[-1].message.startswith("3 more problems not shown")


# ---- scale ----


@pytest.mark.slow  # a scale scenario: 20,000 files
def test_a_20000_file_glob_streams_in_flat_memory(tmp_path: Path, models: Models) -> None:
    seed = image(tmp_path / "seed.png", (2, 2))
    for folder in range(20):
        (tmp_path / f"c/{folder:02}").mkdir(parents=True)
        for i in range(1000):
            # Hard links: 20,000 paths without 20,000 new inodes, which some disks make slow.
            os.link(seed, tmp_path / f"c/{folder:02}/{i:04}.png")
    path = write(tmp_path, """
        version: 1
        defaults: {quality: low}
        tasks:
          - glob: "c/**/*.png"
            prompt: white background
        """)
    manifest = load(path, models)
    report = check_all(manifest, models)
    assert report.tasks == 20_000 and report.cost == pytest.approx(
        20_000 * (272 * 40 + (5 + 194) * 10) / 1e6)  # low output, prompt and image input

    stream = manifest.tasks()
    assert inspect.isgenerator(stream)
    tracemalloc.start()
    try:
        count = sum(1 for _ in stream)
        _, streamed = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        held = list(itertools.islice(manifest.tasks(), 2_000))
        _, holding = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 20_000 and len(held) == 2_000
    # Holding all 20,000 would cost ten times what 2,000 do (~30 MB); the stream holds one
    # folder listing, plus CPython's table of interned path names (pathlib interns each part).
    assert streamed < holding * 10 / 4, (streamed, holding)


def test_the_message_shows_twenty_problems_and_counts_the_rest(tmp_path: Path,
                                                               models: Models) -> None:
    body = "".join(f"  - {{images: missing-{i}.png, prompt: p}}\n" for i in range(25))
    path = tmp_path / "m.yaml"
    path.write_text("version: 1\ntasks:\n" + body)
    with pytest.raises(ManifestError) as caught:
        check_all(load(path, models), models)
    assert len(caught.value.problems) == 25  # every one is kept for --json and the API
    lines = str(caught.value).splitlines()
    assert len(lines) == 22 and lines[0] == "25 problems found; nothing was sent:"
    assert lines[-1] == "  ... and 5 more (`imgedit validate MANIFEST --json` lists every one)"
