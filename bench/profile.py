"""Where the router's CPU goes: py-spy samples the router process from outside while it
routes (``python -m bench --profile``), and this folds the samples into the top costs.

py-spy (``pip install py-spy``) records only samples where a thread is running Python or
native code (idle waits in the event loop are left out), so the shares below are shares
of the router's CPU time. ``self`` is time in the function's own frame; ``total`` includes
everything it called.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
LIBRARY = re.compile(r"^.*/lib/python3\.\d+/(site-packages/)?")
ROOT = Path(__file__).resolve().parents[1]
# Frames every sample passes through (the entry chain): left out of the "total" table.
ENTRY_SHARE = 0.9


def available() -> bool:
    return shutil.which("py-spy") is not None


def attach(pid: int, output: Path, rate_hz: int = 200) -> subprocess.Popen[bytes]:
    """Record ``pid`` until it exits; the folded stacks land in ``output``."""
    argv = ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--full-filenames",
            "--rate", str(rate_hz), "--nonblocking", "--output", str(output)]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def short(path: str) -> str:
    """Paths relative to the project, the standard library or site-packages."""
    stripped = LIBRARY.sub("", path)
    if stripped != path:
        return stripped
    try:
        return str(Path(path).relative_to(ROOT))
    except ValueError:
        return path


def name(frame: str) -> str:
    """'intake (/work/router/pipeline.py:70)' -> 'router/pipeline.py:intake'."""
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    return f"{short(match['file'])}:{match['func']}"


def fold(raw: str, top: int = 25) -> dict[str, Any]:
    """Top functions by self and by total share of the samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    files: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [name(f) for f in stack.split(";") if f.strip()]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        files[frames[-1].split(":", 1)[0]] += count
        for f in set(frames):
            total[f] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        rows = ((f, c / samples) for f, c in counter.most_common())
        return [{"function": f, "share": round(s, 4)} for f, s in rows
                if counter is not total or s < ENTRY_SHARE][:top]

    return {"samples": samples, "top_self": share(own), "top_total": share(total),
            "top_self_by_file": share(files)} if samples else {"samples": 0}


def render(folded: dict[str, Any]) -> str:
    lines = [f"{folded.get('samples', 0)} samples (CPU only)"]
    for title, key in (("self", "top_self"), ("total (incl. callees)", "top_total"),
                       ("self, by file", "top_self_by_file")):
        lines.append(f"\n-- by {title}")
        lines += [f"{row['share'] * 100:6.1f}%  {row['function']}" for row in folded.get(key, [])]
    return "\n".join(lines) + "\n"
