"""Summarise a py-spy profile: where the event loop's thread spends its time, and the others'.

    py-spy record --threads --format raw -o prof.txt -- python -m pipeline run ...
    python bench/hotspots.py prof.txt [--top 25] [--match pipeline/]

The raw format is one collapsed stack per line ("thread;frame;...;frame count").
For each thread group (the main thread, which runs the event loop, and the
worker threads anyio and asyncio start), it prints the share of that group's
samples spent inside each function (inclusive) and at the top of the stack
(self), so a hot spot in our code shows up with the library time it causes.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def short(frame: str) -> str:
    """`write_atomic (pipeline/ledger/durable.py)`: function and the path from the package on."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for anchor in ("site-packages/", "lib/python3", "/work/main/"):
        if anchor in path:
            path = path.split(anchor, 1)[1]
            break
    return f"{match['func']} ({path})"


_THREAD = re.compile(r"^thread \((?P<tid>\d+)\)(?::\s*(?P<name>.*))?$")


def load(path: Path) -> dict[str, Counter[tuple[str, ...]]]:
    """Stacks by thread group: "main thread" (the event loop) and "other threads"."""
    lines = []
    main_tids: set[str] = set()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = _THREAD.match(frames[0])
        if thread is None:  # recorded without --threads: one group, nothing to strip
            lines.append(("main", frames, int(count)))
            main_tids.add("main")
            continue
        if (thread["name"] or "").strip() == "MainThread":
            main_tids.add(thread["tid"])
        lines.append((thread["tid"], frames[1:], int(count)))
    groups: dict[str, Counter[tuple[str, ...]]] = defaultdict(Counter)
    for tid, stack_frames, samples in lines:
        group = "main thread" if tid in main_tids else "other threads"
        groups[group][tuple(short(f) for f in stack_frames)] += samples
    return groups


def report(stacks: Counter[tuple[str, ...]], top: int, match: str | None) -> list[str]:
    total = sum(stacks.values())
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for frames, count in stacks.items():
        for frame in set(frames):
            inclusive[frame] += count
        if frames:
            own[frames[-1]] += count
    lines = [f"  {total} samples", "  inclusive:"]
    shown = [(f, c) for f, c in inclusive.most_common() if not match or match in f][:top]
    lines += [f"    {c / total:6.1%}  {f}" for f, c in shown]
    lines.append("  self:")
    lines += [f"    {c / total:6.1%}  {f}" for f, c in own.most_common(top)]
    return lines


def callees(stacks: Counter[tuple[str, ...]], name: str, top: int) -> list[str]:
    """Inside the first frame containing `name`: the share of the group's samples under
    each direct callee (and "<self>"), so a function's cost is split by what it calls."""
    total = sum(stacks.values())
    below: Counter[str] = Counter()
    for frames, count in stacks.items():
        index = next((i for i, f in enumerate(frames) if name in f), None)
        if index is None:
            continue
        below[frames[index + 1] if index + 1 < len(frames) else "<self>"] += count
    inside = sum(below.values())
    lines = [f"  under {name}: {inside / total:.1%} of {total} samples"]
    lines += [f"    {c / total:6.1%}  {f}" for f, c in below.most_common(top)]
    return lines


def callers(stacks: Counter[tuple[str, ...]], name: str, top: int, depth: int = 3) -> list[str]:
    """Who leads to `name`: the `depth` frames above its first occurrence, by share."""
    total = sum(stacks.values())
    above: Counter[str] = Counter()
    for frames, count in stacks.items():
        index = next((i for i, f in enumerate(frames) if name in f), None)
        if index is not None:
            above[" < ".join(reversed(frames[max(0, index - depth):index]))] += count
    lines = [f"  callers of {name}: {sum(above.values()) / total:.1%} of {total} samples"]
    lines += [f"    {c / total:6.1%}  {f}" for f, c in above.most_common(top)]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", help="only functions whose file contains this, e.g. pipeline/")
    parser.add_argument("--under", action="append", default=[], metavar="FUNC",
                        help="split the time inside FUNC by its direct callees (repeatable)")
    parser.add_argument("--callers", action="append", default=[], metavar="FUNC",
                        help="show the frames that lead to FUNC (repeatable)")
    parser.add_argument("--thread", choices=("main thread", "other threads"),
                        help="only this thread group")
    args = parser.parse_args()
    for group, stacks in sorted(load(args.profile).items()):
        if args.thread and group != args.thread:
            continue
        print(group)
        for name in args.under:
            print("\n".join(callees(stacks, name, args.top)))
        for name in args.callers:
            print("\n".join(callers(stacks, name, args.top)))
        if not args.under and not args.callers:
            print("\n".join(report(stacks, args.top, args.match)))


if __name__ == "__main__":
    main()
