"""Model comparison: `models: [gpt-image-1.5, gemini-2.5-flash-image]` makes one task per model.

Owns checking a `models` list, settling `model` against `models` (the nearer
one wins: an entry's own key over an inherited default), the id of each
model's task (`<id>@<model>`), and the output template that keeps their
images apart (`{model}` in it). Each model's task is then built and checked
like any other, so per-model limits and per-model defaults apply to it.

It never touches files and never decides what a model accepts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SEPARATOR = "@"
# Without an output of their own, each model's image goes beside the input, named for it.
DEFAULT_OUTPUT = "{dir}/{stem}.{model}.edited.{ext}"


def check(value: Any) -> str | None:
    """What is wrong with a `models` value, or None."""
    if not isinstance(value, list) or not value:
        return "expected a list of model names, e.g. [gpt-image-1.5, gemini-2.5-flash-image]"
    if not all(isinstance(v, str) and v.strip() for v in value):
        return "every item must be a model name"
    repeated = sorted({v for v in value if value.count(v) > 1})
    if repeated:
        return f"{repeated[0]!r} is listed twice: each model once"
    return None


def settle(defaults: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults, then the entry's own keys; `model` and `models` from the nearer place."""
    values = dict(defaults)
    if "models" in own:
        values.pop("model", None)
    if "model" in own:
        values.pop("models", None)
    values.update(own)
    return values


def both_given(values: Mapping[str, Any]) -> bool:
    return "model" in values and "models" in values


def names(values: Mapping[str, Any]) -> list[str]:
    """The models to compare, or [] for an ordinary one-model task."""
    models = values.get("models")
    return [str(m) for m in models] if isinstance(models, list) else []


def task_id(base: str, model: str) -> str:
    return f"{base}{SEPARATOR}{model}"


def output_problem(output: Any) -> str | None:
    """Several models writing through one template must each get their own file
    ({id} differs per model too)."""
    if isinstance(output, str) and "{model}" not in output and "{id}" not in output:
        return (f"output {output!r} has no {{model}}: with models: [...] every model's "
                "image would get the same name; add {model}, e.g. "
                "'{dir}/{stem}.{model}.{ext}'")
    return None
