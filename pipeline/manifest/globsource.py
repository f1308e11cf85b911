"""Glob patterns as task sources: the files a pattern matches, streamed in sorted order.

Owns matching `catalog/**/*.jpg` against the file tree: `*`, `?` and `[...]`
within one folder name, `**` for any depth of folders, names starting with a
dot only when the pattern says so (macOS's `._shirt.jpg` is not an image).
A file's extension matches whatever its case, and `.jpg` and `.jpeg` are one
format under two spellings: `*.jpg` takes `DSC_0042.JPG` and `shot.jpeg`
(cameras write `.JPG`, other tools `.jpeg`; the content is checked anyway).
Several patterns merge into one sorted stream; `exclude` patterns leave files out.
The order equals `sorted()` over the matched paths, yet only one folder's
listing is held at a time. It never reads files and never builds tasks.
"""

from __future__ import annotations

import heapq
import os
import re
import string
from collections.abc import Iterator
from pathlib import Path

_MAGIC = re.compile(r"[*?[]")


_JPEG = r"(?i:jpe?g)"


def _segment(pattern: str, last: bool = False) -> str:
    """Regex for one path segment; a leading dot must be written to be matched.
    In the last segment, the extension matches in any case (jpg and jpeg alike)."""
    guard = "" if pattern.startswith(".") else r"(?!\.)"
    stem, dot, ext = pattern.rpartition(".")
    if not (last and dot and stem and "]" not in ext):
        return guard + _chars(pattern)
    ext_regex = _JPEG if ext.lower() in ("jpg", "jpeg") else f"(?i:{_chars(ext)})"
    return guard + _chars(stem) + r"\." + ext_regex


def _chars(pattern: str) -> str:
    """`*`, `?` and `[...]` within one segment, everything else literal."""
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end].replace("\\", "\\\\")
            out.append("[^" + body[1:] + "]" if body[0] in "!^" else "[" + body + "]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _regex(parts: list[str]) -> re.Pattern[str]:
    pieces = []
    last = len(parts) - 1
    for i, part in enumerate(parts):
        if part == "**":
            pieces.append(r"(?:(?!\.)[^/]+/)*" + ("" if i < last else r"(?!\.)[^/]+"))
        else:
            pieces.append(_segment(part, i == last) + ("/" if i < last else ""))
    return re.compile("".join(pieces))


def matches_any(root: Path, patterns: list[str], exclude: list[str]) -> Iterator[Path]:
    """Files matching any of `patterns` and none of `exclude`, sorted, each once.

    An exclude pattern without a `/` is matched against the file name in any folder
    (`*-mask.png`); with one, against the path relative to `root` (`old/**`).
    """
    by_name: list[re.Pattern[str]] = []
    by_path: list[re.Pattern[str]] = []
    for pattern in exclude:
        parts = [p for p in pattern.replace("\\", "/").split("/") if p not in ("", ".")]
        if parts and parts[-1] == "**":
            parts.append("*")  # `old/**` leaves out everything under old/
        (by_path if len(parts) > 1 else by_name).append(_regex(parts or ["*"]))
    previous = None
    streams = [matches(root, p) for p in patterns]
    for path in streams[0] if len(streams) == 1 else heapq.merge(*streams):
        if len(streams) > 1:  # one pattern yields each file once: nothing to compare
            if path == previous:
                continue  # two patterns matched the same file: one task
            previous = path
        if by_name and any(r.fullmatch(path.name) for r in by_name):
            continue
        if by_path:
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            if any(r.fullmatch(rel) for r in by_path):
                continue
        yield path


def matches(root: Path, pattern: str) -> Iterator[Path]:
    """Files under `root` matching `pattern` (relative to root, or absolute), sorted."""
    parts = [p for p in pattern.replace("\\", "/").split("/") if p not in ("", ".")]
    static: list[str] = []
    while len(parts) > 1 and not _MAGIC.search(parts[0]) and parts[0] != "**":
        static.append(parts.pop(0))
    if not parts:
        return
    base = Path(os.path.normpath(os.path.join(root, "/" if pattern.startswith("/") else "",
                                              *static)))
    stars = parts.index("**") if "**" in parts else len(parts)
    levels = [re.compile(_segment(p)) for p in parts[:stars]]
    walker = _Walker(_regex(parts), levels, recursive=stars < len(parts), depth=len(parts),
                     hidden=any(p.startswith(".") for p in parts),
                     name=None if parts[-1] == "**" else re.compile(_segment(parts[-1], True)))
    yield from walker.walk(base, "", 0)


class _Walker:
    def __init__(self, regex: re.Pattern[str], levels: list[re.Pattern[str]],
                 recursive: bool, depth: int, hidden: bool, name: re.Pattern[str] | None):
        self.regex, self.levels, self.recursive, self.depth = regex, levels, recursive, depth
        self.hidden = hidden  # the pattern names a dot-folder: `**` must look inside those
        # The last segment alone, tried on the bare name first: it turns away our outputs
        # and sidecars beside the photos (`x.edited.png`, `x.edited.json` under `*.jpg`)
        # in one short match instead of the whole path's.
        self.name = name

    def walk(self, folder: Path, rel: str, depth: int) -> Iterator[Path]:
        try:
            with os.scandir(folder) as it:
                # Only the names of files are kept (a flat folder of 100k photos is the
                # largest thing held here); the few folders and skips go in a dict.
                names, kinds = [], {}
                for entry in it:
                    names.append(entry.name)
                    # Most entries are files (photos, our outputs and sidecars): the type
                    # the listing gave answers without a stat or a call per entry.
                    if not _is_file(entry) and (kind := self._kind(entry, depth)) != "file":
                        kinds[entry.name] = kind
        except OSError:
            return  # an unreadable folder matches nothing; a pattern that finds nothing says so
        names.sort()  # a folder's contents sort where its name sorts: sorted(Paths)'s order
        for name in names:
            kind = kinds.get(name, "file")
            if kind == "folder":
                yield from self.walk(folder / name, f"{rel}{name}/", depth + 1)
            elif (kind == "file" and (self.name is None or self.name.fullmatch(name))
                  and self.regex.fullmatch(f"{rel}{name}")):
                yield folder / name

    def _kind(self, entry: os.DirEntry[str], depth: int) -> str:
        """'file', 'folder' (one that can still lead to a match) or 'skip'."""
        try:
            if not entry.is_dir():
                return "file"
            # `**` does not follow folder links: a link back up would never end.
            if self.recursive and depth >= len(self.levels) and entry.is_symlink():
                return "skip"
        except OSError:
            return "skip"
        if depth < len(self.levels):
            fits = depth < self.depth - 1 and self.levels[depth].fullmatch(entry.name)
            return "folder" if fits else "skip"
        if not self.recursive or (entry.name.startswith(".") and not self.hidden):
            return "skip"  # `**` never matches .git and friends: no need to walk them
        return "folder"


def _is_file(entry: os.DirEntry[str]) -> bool:
    """A file by the listing's own word (no stat where the file system gives the type);
    False for folders, links and anything in doubt: `_kind` looks at those."""
    try:
        return entry.is_file(follow_symlinks=False)
    except OSError:
        return False


_ANY_EXT = r"(?:png|jpeg|webp)"


def outputs_pattern(template: str) -> re.Pattern[str] | None:
    """A regex for the files an output template names, matched against paths relative
    to the manifest's folder, so that a glob never takes last night's results for new
    inputs (`*.png` next to `shirt.edited.png`).

    None when the template has no literal text to tell an output from an input
    (`{dir}/{stem}.{ext}`): then nothing is skipped, and preflight still refuses
    an output that lands on an input.
    """
    text = template.replace("\\", "/")
    in_dir = text.startswith("{dir}/")
    text = text.removeprefix("{dir}/")
    if text.startswith(("/", "{")) and not text.startswith(("{stem}", "{id}")):
        return None  # absolute or rooted in another placeholder: cannot tell
    body, literal = [], ""
    for lit, name, _spec, _conv in string.Formatter().parse(text):
        literal += lit
        body.append(re.escape(lit))
        if name is None:
            continue
        body.append({"ext": _ANY_EXT, "index": r"\d+", "id": r".+"}.get(name, r"[^/]+"))
    if not literal.strip("./"):
        return None
    regex = "".join(body)
    if "{index}" not in text and regex.endswith(r"\." + _ANY_EXT):
        # n > 1 without {index} in the template adds "-N" before the extension
        regex = regex[: -len(r"\." + _ANY_EXT)] + r"(?:-\d+)?\." + _ANY_EXT
    return re.compile(("(?:^|/)" if in_dir else "^") + regex + "$")


# `run --redo-rejected` keeps `shirt.edited.png` as `shirt.edited.rejected-1.png`.
_REJECTED = re.compile(r"(\.rejected-\d+)\.[^.]+$")


def is_earlier_output(path: Path, rel: str, outputs: re.Pattern[str] | None) -> bool:
    """The name fits the output template and a sidecar stands beside it: a result of
    ours. Both must hold, so a product photo that merely looks like one (`mug-2.png`
    under `{stem}-{index}.{ext}`) is never skipped silently."""
    if outputs is None:
        return False
    if kept := _REJECTED.search(path.name):  # a rejected result kept beside its redo
        name = path.name[: kept.start(1)] + path.name[kept.end(1):]
        return is_earlier_output(path.with_name(name), rel[: len(rel) - len(path.name)] + name,
                                 outputs)
    if not outputs.search(rel):
        return False
    first = re.sub(r"\d+$", "0", path.stem)  # the sidecar is named after output 0
    return path.with_suffix(".json").exists() or path.with_name(first + ".json").exists()
