"""CPU and memory of processes from /proc, for benchmark and load-test reports."""

import csv
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    cpu_s: float
    rss_mb: float
    peak_rss_mb: float


def sample(pid: int) -> Sample:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / TICK  # utime, stime
    rss = peak = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return Sample(cpu, rss, peak)


class ProcessSampler:
    """CPU and memory of the named processes, once a second, to ``procstat.csv``."""

    def __init__(self, path: Path, pids: Callable[[], dict[str, list[int]]]) -> None:
        self.path = path
        self.pids = pids
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="procstat", daemon=True)

    def __enter__(self) -> "ProcessSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        last: dict[int, tuple[float, float]] = {}
        with self.path.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["t", "process", "cpu_pct", "rss_mb"])
            while not self._stop.wait(1.0):
                now = time.time()
                for name, pids in self.pids().items():
                    cpu_pct = rss = 0.0
                    for pid in pids:
                        try:
                            s = sample(pid)
                        except (OSError, IndexError, ValueError):
                            continue
                        before = last.get(pid)
                        last[pid] = (now, s.cpu_s)
                        if before is not None:
                            cpu_pct += 100 * (s.cpu_s - before[1]) / max(1e-6, now - before[0])
                        rss += s.rss_mb
                    out.writerow([round(now, 1), name, round(cpu_pct, 1), round(rss, 1)])
                f.flush()


def children_of(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
