"""Where settings come from, and which wins.

Precedence, lowest first: the shipped config/defaults.yaml, the manifest's
`limits`, then the command line. Providers come from config/providers.yaml
(or the user's own, named by --config / IMGEDIT_CONFIG); the environment's
IMGEDIT_BASE_URL / IMGEDIT_API_KEY override a provider, --base-url beats both.

The API key is read from the environment only, held in a `Secret` whose repr
hides it, and never written anywhere.
"""

from __future__ import annotations

import importlib.resources
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from pipeline.config.routes import parse_overrides
from pipeline.errors import ConfigError

CONFIG_ENV = "IMGEDIT_CONFIG"
# libyaml's loader when PyYAML has it: models.yaml parses in 1.5 ms instead of 13, on
# every command (the pure-Python one takes the same input to the same data).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# A key with these would break the Authorization header (CR/LF) or hide in a terminal.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Secret(str):
    """A string that never shows itself in repr, logs or tracebacks."""

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:  # f-strings and %s get the mask too; use .reveal()
        return "***"

    def reveal(self) -> str:
        return str.__str__(self)


def default_config_dir() -> Path:
    return Path(str(importlib.resources.files("pipeline.config")))


def config_dir(option: str | os.PathLike[str] | None = None) -> Path:
    """--config wins over IMGEDIT_CONFIG, which wins over the shipped folder.
    --config may name a folder or a providers file inside one."""
    chosen = option or os.environ.get(CONFIG_ENV)
    if not chosen:
        return default_config_dir()
    path = Path(chosen).expanduser()
    if path.is_file():
        path = path.parent
    if not path.is_dir():
        raise ConfigError(f"config folder {path} does not exist (from --config or {CONFIG_ENV})")
    return path


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top")
    return data


def config_file(folder: Path, name: str) -> Path:
    """The user's folder may hold only some files; the rest come from the shipped ones."""
    own = folder / name
    return own if own.exists() else default_config_dir() / name


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_PER = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


def parse_rate(text: str) -> float:
    """'30/min' -> 0.5 requests per second. Raises ValueError with the accepted forms."""
    match = _RATE.match(str(text))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"rate {text!r} is not like '30/min', '2/s', '500/h' or 'unlimited'")
    return float(match.group(1)) / _PER[match.group(2)]


@dataclass(frozen=True)
class Provider:
    name: str
    base_url: str | None  # None for the in-process simulator until it starts
    api_key: Secret | None
    api_key_env: str | None
    image_field: str = "image"
    images_field: str = "image[]"
    headers: Mapping[str, str] = field(default_factory=dict)
    simulator: Mapping[str, Any] | None = None  # options when this provider is the simulator
    routes: Mapping[str, Any] = field(default_factory=dict)  # model -> route override

    @property
    def endpoint(self) -> str:
        """"name@host" of the gateway that answers; "simulator" for the simulator, in this
        process or served on a port: a result is done only for the endpoint that produced
        it (a rehearsal is a rehearsal)."""
        if self.base_url is None or self.name == "simulator":
            return self.name
        host = urlsplit(self.base_url).hostname or self.base_url
        return f"{self.name}@{host.lower()}"
    batch: bool = False  # it has OpenAI's Batch API (/v1/files, /v1/batches)


def load_provider(folder: Path, name: str, base_url_option: str | None = None) -> Provider:
    path = config_file(folder, "providers.yaml")
    providers = read_yaml(path)
    if name not in providers:
        known = ", ".join(sorted(providers))
        raise ConfigError(f"provider {name!r} is not in {path} (known: {known})")
    entry = providers[name] or {}
    env = os.environ
    key_env = entry.get("api_key_env")
    key = env.get("IMGEDIT_API_KEY") or (env.get(key_env) if key_env else None)
    base_url = base_url_option or env.get("IMGEDIT_BASE_URL") or entry.get("base_url")
    if key is not None and _CONTROL.search(key):
        where = "IMGEDIT_API_KEY" if env.get("IMGEDIT_API_KEY") else key_env
        raise ConfigError(f"the API key in {where} contains a control character (a line"
                          " break or similar, often pasted from a file): set it again without it")
    simulator = entry.get("simulator")
    if simulator is not None and base_url_option is None and not env.get("IMGEDIT_BASE_URL"):
        base_url = None  # started in-process on a free port by the runner
        key = key or "simulator"
    return Provider(
        name=name,
        base_url=base_url.rstrip("/") if base_url else None,
        api_key=Secret(key) if key else None,
        api_key_env=key_env,
        image_field=entry.get("image_field", "image"),
        images_field=entry.get("images_field", "image[]"),
        headers=dict(entry.get("headers") or {}),
        simulator=(simulator or {}) if base_url is None else None,
        routes=parse_overrides(entry.get("routes"), f"{path}: {name}"),
        batch=entry.get("batch") is True,
    )


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know, resolved once."""

    concurrency: int
    rate: str | None  # "30/min"; None = unlimited
    retries: int
    timeout: float
    task_deadline: float
    grace: float
    progress_every: float
    retry_unknown: bool = True
    max_cost: float | None = None
    batch: bool = False  # send through the provider's Batch API (`run --batch`)


def resolve_settings(folder: Path, limits: Mapping[str, Any], flags: Mapping[str, Any]) -> Settings:
    """defaults.yaml < manifest limits < command-line flags (None = not given)."""
    merged: dict[str, Any] = dict(read_yaml(config_file(folder, "defaults.yaml")))
    merged.update({k: v for k, v in limits.items() if v is not None})
    merged.update({k: v for k, v in flags.items() if v is not None})
    rate = merged.get("rate")
    return Settings(
        concurrency=int(merged["concurrency"]),
        rate=None if str(rate).lower() in ("none", "unlimited", "0") else str(rate),
        retries=int(merged["retries"]),
        timeout=float(merged["timeout"]),
        task_deadline=float(merged["task_deadline"]),
        grace=float(merged["grace"]),
        progress_every=float(merged["progress_every"]),
        retry_unknown=bool(merged.get("retry_unknown", True)),
        max_cost=None if merged.get("max_cost") is None else float(merged["max_cost"]),
        batch=merged.get("batch") is True,
    )
