"""Routes end to end: the CLI against the simulator's relay, nano-banana beside gpt-image,
a route the relay cannot serve, a model it refuses, and the defaults a model does not take."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.conftest import Cli, tiny_image, write_manifest

MIXED = """
    version: 1
    provider: wenwen
    defaults: {quality: low, size: 1024x1024, output: "out/{id}.{ext}"}
    limits: {rate: 1000/s, concurrency: 2}
    tasks:
      - id: banana
        model: gemini-2.5-flash-image
        images: [in/a.png, in/b.png]
        prompt: Put both on a navy tray
      - id: gpt
        model: gpt-image-1
        images: in/a.png
        prompt: Recolor it navy
"""


# One at a time, so the second nano-banana task goes after the first one's answer.
TWO_BANANAS = MIXED.replace("concurrency: 2", "concurrency: 1") + """
      - id: banana-2
        model: gemini-2.5-flash-image
        images: in/b.png
        prompt: Put it on a navy tray
    """


def banana_routes(folder: Path, route: str, fallback: str) -> Path:
    """The config folder where wenwen sends nano-banana by `route`, falling back to `fallback`."""
    return config(folder, {"gemini-2.5-flash-image": {"route": route,
                                                      "fallback_route": fallback}})


def photos(folder: Path) -> None:
    tiny_image(folder / "in/a.png", (200, 40, 40))
    tiny_image(folder / "in/b.png", (40, 200, 40))


def config(folder: Path, routes: dict[str, object]) -> Path:
    """A config folder whose wenwen provider overrides routes (models.yaml stays shipped)."""
    path = folder / "config"
    path.mkdir()
    provider = {"base_url": "https://api.wenwen-ai.com/v1", "api_key_env": "WENWEN_API_KEY",
                "routes": routes}
    (path / "providers.yaml").write_text(yaml.safe_dump({"wenwen": provider}))
    return path


def sidecar(folder: Path, name: str) -> dict[str, object]:
    return dict(json.loads((folder / f"out/{name}.json").read_text()))


def test_nano_banana_and_gpt_image_succeed_with_wenwens_defaults(tmp_path: Path, cli: Cli,
                                                                 sim) -> None:
    photos(tmp_path)
    write_manifest(tmp_path, MIXED)
    code, summary = cli.json("run", "job.yaml", "--base-url", sim.base_url)
    assert code == 0, summary
    assert summary["succeeded"] == 2 and summary["notes"] == []
    assert sim.stats().by_route == {"gemini": 1, "images": 1}
    assert sidecar(tmp_path, "banana")["route"] == "gemini"
    assert sidecar(tmp_path, "gpt")["route"] == "images"
    # quality and size come from defaults, and nano-banana takes neither.
    assert sidecar(tmp_path, "banana")["request"] == {"model": "gemini-2.5-flash-image"}
    assert sidecar(tmp_path, "gpt")["request"] == {"model": "gpt-image-1", "quality": "low",
                                                   "size": "1024x1024"}


def test_validate_lists_the_defaults_it_left_out_and_sends_nothing(tmp_path: Path, cli: Cli,
                                                                   sim) -> None:
    photos(tmp_path)
    write_manifest(tmp_path, MIXED + """
      - id: old
        model: dall-e-2
        images: in/b.png
        prompt: Recolor it navy
    """)
    done = cli("validate", "job.yaml")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == [
        "defaults left out for dall-e-2 (it does not take them): quality in 1 task",
        "defaults left out for gemini-2.5-flash-image (it does not take them): quality in 1 "
        "task, size in 1 task"]
    assert sim.stats().requests == 0


def test_a_tasks_own_refused_value_stays_an_error(tmp_path: Path, cli: Cli) -> None:
    photos(tmp_path)
    write_manifest(tmp_path, """
        version: 1
        tasks:
          - {id: old, model: dall-e-2, quality: low, images: in/a.png, prompt: navy}
    """)
    done = cli("validate", "job.yaml")
    assert done.returncode == 2
    assert "tasks[0].quality: dall-e-2 does not take quality 'low'" in done.stderr


def test_jimeng_edits_are_refused_before_anything_is_paid(tmp_path: Path, cli: Cli) -> None:
    photos(tmp_path)
    write_manifest(tmp_path, """
        version: 1
        tasks:
          - {id: j, model: jimeng-4.0, images: in/a.png, prompt: navy}
    """)
    done = cli("validate", "job.yaml")
    assert done.returncode == 2
    assert "jimeng-4.0 cannot edit here" in done.stderr
    assert "does not carry the input images" in done.stderr


def test_a_route_the_relay_cannot_serve_switches_once_to_the_fallback(tmp_path: Path, cli: Cli,
                                                                      sim) -> None:
    photos(tmp_path)
    folder = banana_routes(tmp_path, "images", "chat")
    write_manifest(tmp_path, TWO_BANANAS)
    code, summary = cli.json("run", "job.yaml", "--base-url", sim.base_url,
                             "--config", str(folder))
    assert code == 0, summary
    assert summary["succeeded"] == 3
    # One convert_request_failed on images, then chat for both nano-banana tasks.
    assert sim.stats().by_route == {"images": 2, "chat": 2}
    assert summary["notes"] == [
        "gemini-2.5-flash-image: route images cannot serve it (convert_request_failed); "
        "switched to chat for the rest of the run"]
    assert sidecar(tmp_path, "banana")["route"] == "chat"
    text = cli("run", "job.yaml", "--base-url", sim.base_url, "--config", str(folder))
    assert text.returncode == 0 and "note:" not in text.stdout  # all done: nothing sent


def test_a_chat_shaped_200_on_images_is_kept_and_the_model_leaves_the_route(
        tmp_path: Path, cli: Cli, simulator) -> None:
    sim = simulator(gemini_images="chat")
    photos(tmp_path)
    folder = banana_routes(tmp_path, "images", "gemini")
    write_manifest(tmp_path, TWO_BANANAS)
    code, summary = cli.json("run", "job.yaml", "--base-url", sim.base_url,
                             "--config", str(folder))
    assert code == 0, summary
    # The paid chat-shaped answer is kept (not sent again on images), the next goes by gemini.
    assert sim.stats().by_route == {"images": 2, "gemini": 1}
    assert sim.stats().requests == 3
    assert sidecar(tmp_path, "banana")["route"] == "images"
    assert sidecar(tmp_path, "banana-2")["route"] == "gemini"
    assert "switched to gemini" in summary["notes"][0]


def test_a_model_the_relay_refuses_stops_and_the_rest_goes_on(tmp_path: Path, cli: Cli,
                                                              simulator) -> None:
    sim = simulator(fault_by_prompt={"tray": "model_price_error"})
    photos(tmp_path)
    write_manifest(tmp_path, TWO_BANANAS)
    code, summary = cli.json("run", "job.yaml", "--base-url", sim.base_url)
    assert code == 1, summary  # finished, some failed: not aborted
    assert (summary["succeeded"], summary["failed"]) == (1, 2)
    assert sim.stats().requests == 2  # banana-2 was never sent
    reasons = {f["id"]: f["reason"] for f in summary["failures"]}
    assert "model_price_error" in reasons["banana"]
    assert reasons["banana-2"].startswith("not sent: gemini-2.5-flash-image stopped")
    assert any("gemini-2.5-flash-image: stopped" in n for n in summary["notes"])


def test_a_route_the_relay_does_not_implement_aborts_without_a_fallback(
        tmp_path: Path, cli: Cli, simulator) -> None:
    sim = simulator(fault_by_prompt={"Recolor": "api_not_implemented"})
    photos(tmp_path)
    write_manifest(tmp_path, MIXED)
    done = cli("run", "job.yaml", "--base-url", sim.base_url)
    assert done.returncode == 3, done.stderr
    assert "api_not_implemented" in done.stderr


def test_a_default_no_model_takes_is_still_a_mistake(tmp_path: Path, cli: Cli) -> None:
    photos(tmp_path)
    write_manifest(tmp_path, """
        version: 1
        defaults: {quality: ultra}
        tasks:
          - {id: a, model: dall-e-2, images: in/a.png, prompt: navy}
    """)
    done = cli("validate", "job.yaml")
    assert done.returncode == 2
    assert "dall-e-2 does not take quality 'ultra'" in done.stderr


def test_model_not_found_is_asked_again_then_aborts(tmp_path: Path, cli: Cli, simulator) -> None:
    sim = simulator(fault_by_prompt={"Recolor": "model_not_found"})
    photos(tmp_path)
    write_manifest(tmp_path, MIXED)
    done = cli("run", "job.yaml", "--base-url", sim.base_url, "--retries", "2")
    assert done.returncode == 3, done.stderr
    assert sim.stats().faults == {"model_not_found": 3}  # the first answer and two more
    assert "pick a model this gateway offers" in done.stderr


def test_a_channel_cooling_down_is_waited_out(tmp_path: Path, cli: Cli, simulator) -> None:
    sim = simulator(fault_by_prompt={"Recolor": {"model_not_found": 1}})
    photos(tmp_path)
    write_manifest(tmp_path, MIXED)
    done = cli("run", "job.yaml", "--base-url", sim.base_url)
    assert done.returncode == 0, done.stderr
