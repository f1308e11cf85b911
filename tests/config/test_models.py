"""Model limits and prices from config/models.yaml, checked on real files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.config.models import FileFacts, Models, ModelSpec, image_shape, probe, sniff_format
from pipeline.errors import ConfigError
from pipeline.task import Location, Task
from tests.conftest import image


def task(tmp_path: Path, images: list[Path], prompt: str = "edit", mask: Path | None = None,
         **fields: object) -> Task:
    fields.setdefault("model", "gpt-image-1")
    return Task(id="t", images=tuple(images), prompt=prompt, where=Location(tmp_path / "m.yaml", 3),
                root=tmp_path, mask=mask, fields=fields)


def messages(problems: list[tuple[str, str]]) -> str:
    return "\n".join(f"{field}: {message}" for field, message in problems)


# ---- sniffing ----


@pytest.mark.parametrize(("fmt", "name"), [("PNG", "png"), ("JPEG", "jpeg"), ("WEBP", "webp")])
def test_sniff_format_reads_magic_bytes(tmp_path: Path, fmt: str, name: str) -> None:
    path = image(tmp_path / f"x.{name}", fmt=fmt)
    assert sniff_format(path.read_bytes()[:16]) == name
    assert probe(path) == FileFacts(path.stat().st_size, name)


@pytest.mark.parametrize("head", [b"", b"GIF89a......", b"RIFF\0\0\0\0WAVE", b"\x89PN", b"hello"])
def test_sniff_format_refuses_other_bytes(head: bytes) -> None:
    assert sniff_format(head) is None


def test_image_shape_reads_header_and_alpha(tmp_path: Path) -> None:
    shape = image_shape(image(tmp_path / "a.png", (30, 20), "RGBA"))
    assert shape is not None and (shape.width, shape.height, shape.alpha) == (30, 20, True)
    rgb = image_shape(image(tmp_path / "b.png", (5, 5)))
    assert rgb is not None and not rgb.alpha
    (tmp_path / "c.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    assert image_shape(tmp_path / "c.png") is None
    assert image_shape(tmp_path / "missing.png") is None


# ---- loading ----


def test_load_shipped_models(models: Models) -> None:
    assert {"gpt-image-1", "dall-e-2", "dall-e-3", "gemini-2.5-flash-image"} <= set(models)
    gpt = models["gpt-image-1"]
    assert gpt.edits and gpt.max_images == 16 and gpt.formats == ("png", "jpeg", "webp")
    assert not gpt.response_format and gpt.mask
    assert gpt.usage_price == {"input_tokens": 10.0, "output_tokens": 40.0}
    assert models["dall-e-2"].square and models["dall-e-2"].max_image_mb == 4
    assert not models["dall-e-3"].edits
    assert models.get("nope") is None


def test_load_reports_every_bad_entry(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(
        "good: {edits: false}\n"
        "a: {edits: true, max_images: 2}\n"
        "b: {edits: false, max_imgs: 3}\n"
        "c: {edits: false, price: {high: {1024x1024: cheap}}}\n"
        "d: [1, 2]\n"
    )
    with pytest.raises(ConfigError) as caught:
        Models.load(path)
    text = str(caught.value)
    assert "a: missing 'max_image_mb'" in text
    assert "b: unknown key 'max_imgs'" in text
    assert "c.price.high" in text
    assert "d: expected a mapping" in text
    assert str(path) in text


def test_load_refuses_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("a: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        Models.load(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        Models.load(tmp_path / "none.yaml")


# ---- checks ----


def test_a_good_task_has_no_problems(tmp_path: Path, models: Models) -> None:
    one = image(tmp_path / "a.png", (64, 64))
    mask = image(tmp_path / "m.png", (64, 64), "RGBA")
    good = task(tmp_path, [one, image(tmp_path / "b.jpg", fmt="JPEG")], mask=mask,
                size="1024x1024", quality="high")
    assert models.check(good) == []


def test_unknown_model_suggests_the_close_one(tmp_path: Path, models: Models) -> None:
    problems = models.check(task(tmp_path, [image(tmp_path / "a.png")], model="gpt-image1"))
    assert problems[0][0] == "model"
    assert "unknown model 'gpt-image1'; did you mean 'gpt-image-1'?" in problems[0][1]


def test_dall_e_3_cannot_edit(tmp_path: Path, models: Models) -> None:
    problems = models.check(task(tmp_path, [image(tmp_path / "a.png")], model="dall-e-3"))
    assert problems == [("model", problems[0][1])]
    assert "dall-e-3 cannot edit images" in problems[0][1] and "gpt-image-1" in problems[0][1]


def test_too_many_images(tmp_path: Path, models: Models) -> None:
    one = image(tmp_path / "a.png")
    problems = models.check(task(tmp_path, [one] * 17))
    assert ("images", "17 images, but gpt-image-1 takes at most 16: split the task or drop "
                      "some") in problems


def test_dall_e_2_takes_one_square_png_under_4_mb(tmp_path: Path, models: Models) -> None:
    wide = image(tmp_path / "wide.png", (20, 10))
    photo = image(tmp_path / "photo.jpg", fmt="JPEG")
    big = tmp_path / "big.png"
    big.write_bytes(image(tmp_path / "sq.png").read_bytes() + b"\0" * (4 * 1024 * 1024))
    problems = models.check(task(tmp_path, [wide, photo, big], model="dall-e-2"))
    text = messages(problems)
    assert "images: 3 images, but dall-e-2 takes at most 1" in text
    assert f"images[0]: {wide} is 20x10; dall-e-2 takes only square images" in text
    assert f"images[1]: {photo} is jpeg; dall-e-2 takes png" in text
    assert f"images[2]: {big} is 4.0 MiB; dall-e-2 takes at most 4 MiB" in text


def test_prompt_size_quality_response_format(tmp_path: Path, models: Models) -> None:
    one = image(tmp_path / "a.png")
    dalle = models.check(task(tmp_path, [one], prompt="x" * 1001, model="dall-e-2",
                              size="1536x1024", quality="high"))
    assert [field for field, _ in dalle] == ["prompt", "size", "quality"]
    assert "is 1001 characters; dall-e-2 takes at most 1000" in dalle[0][1]
    assert "use one of: 256x256, 512x512, 1024x1024" in dalle[1][1]
    gpt = models.check(task(tmp_path, [one], response_format="b64_json"))
    assert gpt == [("response_format", "gpt-image-1 refuses response_format (it always answers "
                                       "base64): remove it")]
    assert models.check(task(tmp_path, [one], model="dall-e-2", response_format="url")) == []


def test_mask_rules(tmp_path: Path, models: Models) -> None:
    first = image(tmp_path / "a.png", (64, 64))
    gemini = models.check(task(tmp_path, [first], mask=image(tmp_path / "m.png", (64, 64), "RGBA"),
                               model="gemini-2.5-flash-image"))
    assert [f for f, _ in gemini] == ["mask"] and "takes no mask" in gemini[0][1]
    small = image(tmp_path / "small.png", (32, 32), "RGBA")
    assert models.check(task(tmp_path, [first], mask=small)) == [
        ("mask", f"{small} is 32x32 but the first image is 64x64: they must match")]
    flat = image(tmp_path / "flat.png", (64, 64))
    assert "has no transparency" in messages(models.check(task(tmp_path, [first], mask=flat)))
    jpeg = image(tmp_path / "m.jpg", (64, 64), fmt="JPEG")
    assert "a mask must be a PNG" in messages(models.check(task(tmp_path, [first], mask=jpeg)))


def test_size_limit_and_facts_from_the_caller(tmp_path: Path) -> None:
    tiny = Models({"m": ModelSpec("m", edits=True, max_images=2, max_image_mb=0.00002,
                                  formats=("png",), prompt_max=10)})
    one = image(tmp_path / "a.png", (40, 40))
    found = messages(tiny.check(task(tmp_path, [one], model="m")))
    assert "m takes at most 2e-05 MiB: shrink it" in found
    # The caller probed the first file and reported the second as unusable: no repeat here.
    missing = tmp_path / "gone.png"
    facts = {one: FileFacts(10, "png")}
    assert tiny.check(task(tmp_path, [one, missing], model="m"), facts) == []
    alone = tiny.check(task(tmp_path, [one, missing], model="m"))
    assert ("images[1]", f"cannot read {missing}") in alone


# ---- prices ----


def test_estimate(tmp_path: Path, models: Models) -> None:
    one = [image(tmp_path / "a.png")]

    def cost(**fields: Any) -> float:
        return models.estimate(task(tmp_path, one, **fields))

    # gpt-image: output tokens by quality ($40/M), plus the prompt (2 tokens) and the
    # 8x8 input (65 + 129 for its one tile) at $10/M.
    inputs = (2 + 194) * 10 / 1e6
    assert cost(quality="high", size="1024x1024", n=2) == pytest.approx(
        2 * 4160 * 40 / 1e6 + inputs)
    assert cost(quality="medium", size="1536x1024") == pytest.approx(1584 * 40 / 1e6 + inputs)
    # auto: the dearest quality, so the estimate is never low
    assert cost(quality="auto", size="1024x1536") == pytest.approx(6240 * 40 / 1e6 + inputs)
    assert cost() == pytest.approx(4160 * 40 / 1e6 + inputs)  # no quality, no size: high
    assert cost(quality="low", size="auto") == pytest.approx(272 * 40 / 1e6 + inputs)
    assert cost(model="gemini-2.5-flash-image", size="1536x1024", n=3) == pytest.approx(0.117)
    assert cost(model="dall-e-2", size="512x512") == pytest.approx(0.018)
    assert cost(model="dall-e-2") == pytest.approx(0.02)
    assert cost(model="dall-e-3") == 0.0
    assert cost(model="unknown") == 0.0


def test_cost_from_usage(models: Models) -> None:
    usage = {"input_tokens": 1000, "output_tokens": 2000, "total_tokens": 3000}
    assert models.cost_from_usage("gpt-image-1", usage) == pytest.approx(0.09)
    assert models.cost_from_usage("gpt-image-1-mini", {"output_tokens": 1_000_000}) == 8.0
    assert models.cost_from_usage("gpt-image-1", {"total_tokens": 5}) is None
    assert models.cost_from_usage("dall-e-2", usage) is None
    assert models.cost_from_usage("nope", usage) is None


# ---- today's models, free sizes, fields a model takes ----


def test_todays_models_are_listed_with_routes(models: Models) -> None:
    assert {"gpt-image-1.5", "gpt-image-2", "chatgpt-image-latest", "gemini-3.1-flash-image",
            "gemini-3-pro-image-preview", "jimeng-4.0"} <= set(models)
    banana = models["gemini-2.5-flash-image"]
    assert (banana.route, banana.fallback_route) == ("gemini", "chat")
    assert models["gpt-image-1"].route == "images" and models["jimeng-4.0"].edit_routes == ()


@pytest.mark.parametrize(("size", "fits"), [
    ("3840x2160", True), ("2160x3840", True), ("1024x1024", True), ("2048x1152", True),
    ("auto", True), ("3840x1280", True),
    ("1000x1000", False),  # not multiples of 16
    ("3856x2160", False),  # wider than 3840
    ("3840x2176", False),  # taller than 2160 on the short side
    ("3840x1264", False),  # longer than 3:1
    ("0x0", False), ("big", False),
])
def test_gpt_image_2_takes_free_sizes(tmp_path: Path, models: Models, size: str,
                                      fits: bool) -> None:
    one = image(tmp_path / "a.png")
    found = models.check(task(tmp_path, [one], model="gpt-image-2", size=size))
    assert (found == []) is fits, found


def test_a_field_a_model_does_not_take_is_named(tmp_path: Path, models: Models) -> None:
    one = image(tmp_path / "a.png")
    mini = models.check(task(tmp_path, [one], model="gpt-image-1-mini", input_fidelity="high"))
    assert mini == [("input_fidelity", "gpt-image-1-mini does not take input_fidelity: "
                                       "remove it")]
    banana = models.check(task(tmp_path, [one], model="gemini-2.5-flash-image", quality="high"))
    assert banana == [("quality", "gemini-2.5-flash-image does not take quality: remove it")]


def test_routes_and_takes_are_checked_when_loading(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text("x:\n  route: pigeon\n  takes: [model, colour]\n")
    with pytest.raises(ConfigError) as caught:
        Models.load(path)
    assert "x.route: 'pigeon' is not one of" in str(caught.value)
    assert "x.takes: 'colour' is not a request field" in str(caught.value)
