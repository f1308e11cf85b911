"""The estimate against what the simulator's `usage` bills: within 5% for gpt-image models,
input images and prompt included (the two sides count tokens each on their own)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from pipeline.config.models import Models
from pipeline.config.settings import Provider, Secret
from pipeline.gateway.client import Gateway
from pipeline.simulator.app import SimulatorOptions, running_simulator
from pipeline.task import Location, Task
from tests.conftest import TEST_KEY, image

CASES = [
    ("gpt-image-1", "low", "1024x1024", 1, [(24, 24)]),
    ("gpt-image-1", "high", "1536x1024", 1, [(1024, 1024)]),
    ("gpt-image-1-mini", "medium", "1024x1536", 2, [(2000, 1200), (300, 200)]),
    ("gpt-image-1.5", "high", "1024x1024", 1, [(4000, 3000)] * 4),
    ("gpt-image-2", "medium", "2048x1152", 1, [(1920, 1080)]),
    ("chatgpt-image-latest", "low", "1024x1024", 1, [(800, 800)] * 2),
]


@pytest.mark.parametrize(("model", "quality", "size", "n", "inputs"), CASES)
async def test_the_estimate_lands_within_5_percent_of_the_bill(
        tmp_path: Path, models: Models, model: str, quality: str, size: str, n: int,
        inputs: list[tuple[int, int]]) -> None:
    paths = tuple(image(tmp_path / f"in{i}.png", shape) for i, shape in enumerate(inputs))
    task = Task(id="t", images=paths, prompt="Put the product on a white background " * 3,
                where=Location(tmp_path, 1), root=tmp_path,
                fields={"model": model, "quality": quality, "size": size, "n": n})
    estimate = models.estimate(task)
    async with running_simulator(SimulatorOptions(api_key=TEST_KEY)) as sim, \
            aiohttp.ClientSession() as session:
        provider = Provider("sim", sim.base_url, Secret(TEST_KEY), None)
        answer = await Gateway(session, provider, 30).edit(task, "k")
    assert answer.usage is not None
    billed = models.cost_from_usage(model, answer.usage)
    assert billed is not None and billed > 0
    assert abs(estimate - billed) <= 0.05 * billed, (estimate, billed, answer.usage)
    # Input tokens are a real part of it: leaving them out would miss by more than 5%.
    assert answer.usage["input_tokens_details"]["image_tokens"] > 0


def test_input_images_raise_the_estimate(tmp_path: Path, models: Models) -> None:
    one = image(tmp_path / "a.png", (1024, 1024))
    fields = {"model": "gpt-image-1", "quality": "low", "size": "1024x1024"}
    alone = Task(id="t", images=(one,), prompt="p", where=Location(tmp_path, 1),
                 root=tmp_path, fields=fields)
    many = Task(id="t", images=(one,) * 8, prompt="p", where=Location(tmp_path, 1),
                root=tmp_path, fields=fields)
    assert models.estimate(many) > models.estimate(alone) * 1.5
