"""Sampling the controller under load with py-spy, and the functions that took the time.

py-spy attaches to the running process (no change to the controller) and samples only the
thread holding the GIL (``--gil``): the controller is one process, so the GIL is the core it
can use, and threads waiting on PostgreSQL or on sockets cost it nothing. It writes collapsed
stacks ("frame;frame;frame count" lines). The summary
counts, for each function, the samples it was on the stack (inclusive) and at the top (self).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

TOP = 25


def _py_spy() -> str:
    return shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))


def available() -> bool:
    return Path(_py_spy()).is_file()


def start(pid: int, output: Path, rate: int = 100) -> subprocess.Popen:
    argv = [_py_spy(), "record", "--pid", str(pid), "--format", "raw", "--rate", str(rate),
            "--nonblocking", "--gil", "--output", str(output)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


def summary(path: Path, top: int = TOP) -> str:
    inclusive, own, total = Counter(), Counter(), 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        total += int(count)
        own[_short(frames[-1])] += int(count)
        for frame in set(_short(f) for f in frames):
            inclusive[frame] += int(count)
    if not total:
        return f"{path}: no samples"
    lines = [f"\nprofile: {total} samples ({path})", "inclusive %  self %  function"]
    for frame, count in inclusive.most_common(top):
        lines.append(f"{100 * count / total:10.1f}  {100 * own[frame] / total:6.1f}  {frame}")
    lines.append("\nself %  function (top by own samples)")
    for frame, count in own.most_common(top):
        lines.append(f"{100 * count / total:6.1f}  {frame}")
    return "\n".join(lines)


def _short(frame: str) -> str:
    # py-spy frames read "function (path/to/file.py:line)": keep function and file name.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({'/'.join(where.split('/')[-2:])})" if where else name
