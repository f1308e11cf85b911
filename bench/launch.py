"""Run one command and write its own resource usage as JSON: the measured client's launcher.

Why a launcher: on Linux a child's peak RSS (ru_maxrss) starts at its parent's
high-water mark — vfork and fork hand the parent's memory over, and exec keeps
the larger figure. Spawned straight from the benchmark, which has just built a
100k-file catalog, `python -c pass` reports the benchmark's own 100+ MB. This
launcher is a bare interpreter (`python -S`, a few MB), so what wait4 reports
for the command it spawns is the command's own.

    python -S bench/launch.py RESULT.json CMD [ARG...]
"""

import json
import os
import sys
import time


def main() -> int:
    result, cmd = sys.argv[1], sys.argv[2:]
    started = time.perf_counter()
    pid = os.posix_spawnp(cmd[0], cmd, os.environ)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    with open(result, "w", encoding="utf-8") as out:
        json.dump({"wall_s": wall, "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
                   "max_rss_kib": usage.ru_maxrss,  # KiB on Linux
                   "returncode": os.waitstatus_to_exitcode(status)}, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
