"""`imgedit init [FOLDER]`: a commented starter manifest for the images in a folder.

Owns looking at what the folder holds (which image types, how many, whether
some are large photos worth downscaling) and the text of a manifest that
validates as written and says, line by line, what to change. It returns the
text; the command line writes it (this package never writes a file).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from pipeline.config.settings import config_dir, config_file, read_yaml

NAME = "imgedit.yaml"
LARGE = 4 * 1024 * 1024  # bytes: a photo this big goes up faster downscaled
_KINDS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}


def survey(folder: Path) -> tuple[Counter[str], int]:
    """Images by kind (jpg, png, webp; any case) and how many are large, skipping dot-folders
    and earlier results (`*.edited.*`)."""
    kinds: Counter[str] = Counter()
    large = 0
    for here, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            kind = _KINDS.get(os.path.splitext(name)[1].lower())
            if kind is None or name.startswith(".") or ".edited." in name:
                continue
            kinds[kind] += 1
            try:
                large += os.stat(os.path.join(here, name)).st_size > LARGE
            except OSError:
                continue
    return kinds, large


def text(folder: Path, config: str | None = None) -> str:
    """The manifest for `folder`, to be written as `folder/imgedit.yaml`; the model is the
    config's default (`--config`), so what validates here validates for the user."""
    model = read_yaml(config_file(config_dir(config), "defaults.yaml")).get("model")
    kinds, large = survey(folder)
    total = sum(kinds.values())
    patterns = [f"**/*.{kind}" for kind in ("jpg", "png", "webp") if kinds[kind]] or ["**/*.jpg"]
    found = (", ".join(f"{n} .{k}" for k, n in kinds.most_common()) if total
             else "none yet: an empty glob is only a warning")
    prepare = "" if large else "# "
    return f"""\
# Starter manifest from `imgedit init` for {folder}
# ({total} images: {found}). Every line can change; what each does is said beside it.
#   imgedit validate {NAME}    checks it and prints the cost estimate; sends nothing
#   imgedit run {NAME}         edits; run again to send only what is new, changed or failed
version: 1
provider: simulator     # a free rehearsal; set wenwen (key in WENWEN_API_KEY) or openai to edit
defaults:
  model: {model or "gpt-image-1"}    # others in config/models.yaml; models: [a, b] compares several
  quality: low          # low, medium or high: the price per image rises with it
  size: 1024x1024       # or 1536x1024, 1024x1536, auto
  output: "{{dir}}/{{stem}}.edited.{{ext}}"   # beside each input; {{ext}} is the real format
  {prepare}prepare: {{max_side: 2048, format: jpeg, quality: 90}}  # downscale before upload\
{"" if large else " (no large photos here)"}
limits: {{concurrency: 4, rate: 30/min, retries: 5}}
tasks:
  - glob: [{", ".join(f'"{p}"' for p in patterns)}]  # one task per image (.jpg: also .JPG, .jpeg)
    exclude: ["*-mask.png"]  # files to leave out
    prompt: Put the product on a pure white background with a soft shadow  # what to do
"""
