"""Which route each model's edits travel by, on one provider: models.yaml, then the
provider's `routes:` overrides.

A route is `images` (multipart `POST /images/edits`), `chat` (`POST
/chat/completions`, images as data-URL parts) or `gemini` (`POST
/v1beta/models/{model}:generateContent`, `inline_data` parts). A model names
its `route` (default images) and may name a `fallback_route`; a provider may
override either per model:

    routes:
      gemini-2.5-flash-image: chat                     # the route only
      jimeng-4.0: {route: images, fallback_route: null}

It owns reading and checking those overrides and answering "which route, and
which fallback, for this model here". It never sends anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import ConfigError

ROUTES = ("images", "chat", "gemini")
DEFAULT_ROUTE = "images"


@dataclass(frozen=True)
class RoutePlan:
    route: str
    fallback: str | None = None


def check_route(value: Any, where: str) -> str | None:
    """`value` as a route name, None for null; a ConfigError naming `where` otherwise."""
    if value is None or value in ROUTES:
        return value
    raise ConfigError(f"{where}: {value!r} is not a route; use one of: {', '.join(ROUTES)}")


def parse_overrides(raw: Any, where: str) -> dict[str, RoutePlan | str]:
    """A provider's `routes:` mapping: model -> a route name, or {route, fallback_route}."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: routes: expected a mapping of model -> route")
    found: dict[str, RoutePlan | str] = {}
    for model, value in raw.items():
        at = f"{where}: routes.{model}"
        if isinstance(value, Mapping):
            unknown = set(value) - {"route", "fallback_route"}
            if unknown:
                raise ConfigError(f"{at}: unknown key {sorted(unknown)[0]!r}; "
                                  "known: route, fallback_route")
            route = check_route(value.get("route", DEFAULT_ROUTE), f"{at}.route")
            fallback = check_route(value.get("fallback_route"), f"{at}.fallback_route")
            found[str(model)] = RoutePlan(route or DEFAULT_ROUTE, fallback)
        else:
            found[str(model)] = check_route(value, at) or DEFAULT_ROUTE
    return found


@dataclass(frozen=True)
class Routing:
    """Model -> RoutePlan on one provider."""

    models: Mapping[str, RoutePlan] = field(default_factory=dict)  # from models.yaml
    overrides: Mapping[str, RoutePlan | str] = field(default_factory=dict)  # the provider's

    def plan(self, model: str) -> RoutePlan:
        base = self.models.get(model, RoutePlan(DEFAULT_ROUTE))
        override = self.overrides.get(model)
        if isinstance(override, RoutePlan):
            return override
        if isinstance(override, str):
            fallback = base.fallback if base.fallback != override else None
            return RoutePlan(override, fallback)
        return base

    def route(self, model: str) -> str:
        return self.plan(model).route
