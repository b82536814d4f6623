"""What every benchmark measures with: CPU time, memory (from /proc, Linux), the machine's name, and child processes.

A benchmark that compares two things runs each in a child process of its own (`run_child`), so that each has its
own peak memory and neither inherits the other's allocator state; the child prints one JSON line last.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import threading
from pathlib import Path

from lits.core.compose import CHECKOUT as REPO
from lits.core.device import cpu_info


# ---------------------------------------------------------------------------------------------- the machine
def cpu_model() -> str:
    """The CPU model (with its family and model numbers: virtual machines often report only "AMD EPYC") and its widest
    vector extensions, as lscpu reports them: a timing means nothing without them."""
    fields = cpu_info()
    flags = set((fields.get("flags") or "").split())
    name = fields.get("model name") or platform.processor() or "unknown CPU"
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']}, model {fields.get('model') or '?'})"
    wide = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile") if f in flags]
    return f"{name}, {', '.join(wide) or 'no AVX2'}, {os.cpu_count()} CPUs"


def machine_line() -> str:
    """One line for the head of every benchmark's output: the CPU and what else was running (load average)."""
    return f"machine: {cpu_model()}, load average {os.getloadavg()[0]:.1f}"


# ---------------------------------------------------------------------------------------------- CPU time
def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by the given live processes."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """The live child processes of `pid`, and theirs (e.g. DataLoader workers)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        children = []
        try:
            for task in Path(f"/proc/{parent}/task").iterdir():
                children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
        found += children
        todo += children
    return found


def tree_cpu_s() -> float:
    """CPU seconds used so far by this process and its live descendants (the loader workers)."""
    return cpu_seconds([os.getpid(), *descendants(os.getpid())])


def own_cpu_s() -> float:
    """CPU seconds used so far by this process alone."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------------------------------- memory
def status_kb(pid: int | str, key: str) -> int:
    """A field of /proc/<pid>/status in kB (0 when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kb(pid: int) -> int:
    """Proportional set size: pages shared between a process and its forked workers are counted once over them."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return status_kb(pid, "VmRSS")


def rss_mb() -> float:
    return status_kb("self", "VmRSS") / 1024


def peak_rss_mb() -> float:
    """This process's peak RSS since exec: VmHWM (getrusage's ru_maxrss would include the parent's before the fork)."""
    return status_kb("self", "VmHWM") / 1024


class PeakMemory(threading.Thread):
    """Samples PSS and RSS of this process tree every `interval` s; `stop()` returns the peaks in MB."""

    def __init__(self, interval: float = 0.02):
        super().__init__(daemon=True)
        self.interval, self.peak_pss_mb, self.peak_rss_sum_mb = interval, 0.0, 0.0
        self._halt = threading.Event()

    def sample(self) -> None:
        pids = [os.getpid(), *descendants(os.getpid())]
        self.peak_pss_mb = max(self.peak_pss_mb, sum(pss_kb(p) for p in pids) / 1024)
        self.peak_rss_sum_mb = max(self.peak_rss_sum_mb, sum(status_kb(p, "VmRSS") for p in pids) / 1024)

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self) -> dict:
        self._halt.set()
        self.join()
        self.sample()
        return {
            "peak_pss_mb": round(self.peak_pss_mb, 1),
            "peak_rss_sum_mb": round(self.peak_rss_sum_mb, 1),
            "main_peak_rss_mb": round(peak_rss_mb(), 1),
        }


# ---------------------------------------------------------------------------------------------- children
def run_child(benchmark: str, argv: list[str]) -> dict:
    """`python -m benchmarks <benchmark> <argv>` in a fresh interpreter; its last stdout line is the JSON result.
    The checkout goes on the child's PYTHONPATH so that `-m benchmarks` resolves from any working directory."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "benchmarks", benchmark, *map(str, argv)]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.stderr.write(result.stderr[-4000:])
        raise SystemExit(f"benchmark child {benchmark} {' '.join(map(str, argv))} failed (exit {result.returncode})")
    return json.loads(result.stdout.strip().splitlines()[-1])


def options_argv(args, names: list[str]) -> list[str]:
    """The parent's values of these options as command-line arguments for a child (`batch_size` -> --batch-size)."""
    argv = []
    for name in names:
        argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    return argv


def say(message: str) -> None:
    """Progress on stderr (stdout holds the figures)."""
    print(message, file=sys.stderr, flush=True)
