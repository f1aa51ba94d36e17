"""Measure one benchmark step in its own process: wall time and that process's peak RSS.

The peak is the child's own VmHWM (/proc/PID/status), sampled while it runs.
Neither RUSAGE_CHILDREN (every earlier child folded into one number) nor the
child's own ru_maxrss from wait4 will do: Linux carries the pre-exec high-water
mark across exec, so a child forked from a large parent reports at least the
parent's size. VmHWM belongs to the address space exec created, and only grows,
so the last sample before exit is the peak up to the final few milliseconds.
Also: machine facts for the results file, and the page-cache warm-up that makes
steps reading the same checkpoint start from the same cache state.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

KIB = 1024
WARM_CHUNK = 16 << 20
PEAK_POLL_S = 0.01


@dataclass(frozen=True)
class StepResult:
    name: str
    wall_s: float
    peak_rss_bytes: int
    cpu_s: float  # user + system time of the step's process: how much of the 2 cores it used
    returncode: int
    log: str
    loadavg_before: float  # 1-minute load average: shows whether others shared the machine

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "wall_s": round(self.wall_s, 3),
            "peak_rss_bytes": self.peak_rss_bytes,
            "cpu_s": round(self.cpu_s, 3),
            "returncode": self.returncode,
            "log": self.log,
            "loadavg_1m_before": self.loadavg_before,
        }


def run_step(name: str, cmd: list[str], log: Path, env: dict | None = None, cwd: Path | None = None) -> StepResult:
    """Run `cmd` (no shell, so the measured process is the tool itself) into `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        load = os.getloadavg()[0]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        status, usage, peak = _wait_sampling_peak(proc.pid)
        wall = time.perf_counter() - start
    # wait4 reaped the child; tell Popen so it does not try again.
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    # ru_maxrss only when the child ended before a single sample (an upper bound, see above).
    return StepResult(name, wall, peak or usage.ru_maxrss * KIB, cpu, proc.returncode, str(log), load)


def _wait_sampling_peak(pid: int):
    """Reap `pid`, sampling its VmHWM meanwhile; return (wait status, rusage, peak bytes)."""
    peak = 0
    while True:
        peak = max(peak, _vm_hwm_bytes(pid))
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage, peak
        time.sleep(PEAK_POLL_S)


def _vm_hwm_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * KIB
    except (OSError, ValueError):
        pass  # exited, or a zombie whose memory is already gone
    return 0


def warm_page_cache(paths: list[Path]) -> float:
    """Read every file once so the next step finds it in the page cache; return seconds.

    Dirty pages of earlier outputs are flushed first so that their write-back does
    not land inside the next timed step.
    """
    start = time.perf_counter()
    os.sync()
    buf = bytearray(WARM_CHUNK)
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass
    return time.perf_counter() - start


def _meminfo_bytes(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * KIB
    return 0


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def machine_info() -> dict:
    """What the numbers were measured on; the load average shows whether it was shared."""
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "ram_bytes": _meminfo_bytes("MemTotal"),
        "ram_available_bytes": _meminfo_bytes("MemAvailable"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": list(os.getloadavg()),
    }


def disk_free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def package_versions(names: list[str]) -> dict[str, str | None]:
    """Installed versions in this environment (None where a package is missing)."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(repo: Path) -> str | None:
    done = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or None
