"""A child process watched from outside: resident memory and CPU time from /proc (its own
children included), sampled every 100 ms by a thread, so the numbers cost the watched
process nothing.

    watched = Watched.spawn([sys.executable, "-m", "router.cli", "run", "-c", path], log)
    ...
    watched.peak_rss_mb()             # VmHWM: the kernel's own high-water mark
    watched.cpu_between(t0, t1)       # CPU seconds (all threads) between two wall times
    watched.stop()                    # SIGTERM, then SIGKILL after a timeout

Machine-wide busy time (``/proc/stat``) is sampled alongside, to show how loaded the
two cores were while something was measured.
"""

from __future__ import annotations

import bisect
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

TICK_S = 1 / os.sysconf("SC_CLK_TCK")
INTERVAL_S = 0.1


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # wall clock, time.time()
    rss_kb: int
    hwm_kb: int
    cpu_s: float  # the process: user + system, all threads
    own_cpu_s: float  # the process alone, without its children (the DuckDB loader)
    own_hwm_kb: int
    busy_s: float  # the machine: every core, non-idle
    total_s: float  # the machine: every core, all states


def machine_times() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    with open("/proc/stat", "rb") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])
    return (total - idle) * TICK_S, total * TICK_S


def descendants(pid: int) -> list[int]:
    """Child processes, recursively (e.g. the DuckDB loader the router spawns)."""
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            out += [child, *descendants(child)]
    return out


def _one(pid: int) -> tuple[int, int, float] | None:
    """(rss_kb, hwm_kb, cpu_s) of one live process."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    memory = {}
    for line in status.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":", 1)
            memory[key] = int(value.split()[0])
    fields = stat.rsplit(")", 1)[1].split()  # after "(comm)": state is fields[0]
    if fields[0] == "Z" or "VmRSS" not in memory:
        return None
    return memory["VmRSS"], memory["VmHWM"], (int(fields[11]) + int(fields[12])) * TICK_S


def read_sample(pid: int) -> Sample | None:
    """The process and its children together: RSS and CPU summed; the high-water mark
    is the sum of each one's (an upper bound of the joint peak)."""
    own = _one(pid)
    if own is None:
        return None
    rss, hwm, cpu = own
    own_hwm, own_cpu = hwm, cpu
    for child in descendants(pid):
        got = _one(child)
        if got is not None:
            rss, hwm, cpu = rss + got[0], hwm + got[1], cpu + got[2]
    busy, total = machine_times()
    return Sample(time.time(), rss, hwm, cpu, own_cpu, own_hwm, busy, total)


class Watched:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.samples: list[Sample] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, name=f"watch-{proc.pid}",
                                        daemon=True)
        self._thread.start()

    @classmethod
    def spawn(cls, argv: list[str], log: Path, cwd: Path | None = None,
              env: dict[str, str] | None = None) -> Watched:
        with log.open("ab") as out:
            # Same process group as the bench: Ctrl-C (or killing the group) stops it too.
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT)
        return cls(proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _sample(self) -> None:
        while not self._done.is_set():
            sample = read_sample(self.proc.pid)
            if sample is None:
                if self.proc.poll() is not None:
                    return
            else:
                self.samples.append(sample)
            self._done.wait(INTERVAL_S)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (the router drains and commits), SIGKILL after ``timeout_s``."""
        last = read_sample(self.proc.pid)
        if last is not None:
            self.samples.append(last)
        for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
            if self.proc.poll() is not None:
                break
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait_s)
            except subprocess.TimeoutExpired:
                continue
        self._done.set()
        self._thread.join(5)
        return self.proc.wait()

    # -- figures ----------------------------------------------------------------------
    def peak_rss_mb(self, since: float = 0.0, until: float = float("inf")) -> float:
        """The high-water mark over the whole life, or the largest sample in a window."""
        if since or until != float("inf"):
            window = [s.rss_kb for s in self.samples if since <= s.at <= until]
            return round(max(window, default=0) / 1024, 1)
        return round(max((s.hwm_kb for s in self.samples), default=0) / 1024, 1)

    def rss_mb(self, at: float) -> float:
        sample = self._nearest(at)
        return round(sample.rss_kb / 1024, 1) if sample else 0.0

    def cpu_between(self, start: float, end: float, own: bool = False) -> float:
        """CPU seconds of the process and its children (``own``: the process alone)."""
        a, b = self._nearest(start), self._nearest(end)
        if not a or not b:
            return 0.0
        return round(b.own_cpu_s - a.own_cpu_s if own else b.cpu_s - a.cpu_s, 3)

    def own_peak_rss_mb(self) -> float:
        """The process's own high-water mark, without its children."""
        return round(max((s.own_hwm_kb for s in self.samples), default=0) / 1024, 1)

    def machine_busy_pct(self, start: float, end: float) -> float:
        """Share of all cores busy (any process) between two wall times."""
        a, b = self._nearest(start), self._nearest(end)
        if not a or not b or b.total_s <= a.total_s:
            return 0.0
        return round(100 * (b.busy_s - a.busy_s) / (b.total_s - a.total_s), 1)

    def rss_series(self, points: int = 200) -> list[tuple[float, float]]:
        """(seconds since start, MB), thinned to about ``points`` samples."""
        if not self.samples:
            return []
        step = max(1, len(self.samples) // points)
        t0 = self.samples[0].at
        return [(round(s.at - t0, 2), round(s.rss_kb / 1024, 1)) for s in self.samples[::step]]

    def _nearest(self, at: float) -> Sample | None:
        samples = self.samples
        if not samples:
            return None
        i = bisect.bisect_left([s.at for s in samples], at)
        candidates = samples[max(0, i - 1):i + 1]
        return min(candidates, key=lambda s: abs(s.at - at))
