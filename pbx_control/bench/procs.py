"""Controllers under test as child processes: start, wait until listening, memory, stop.

Memory is read from ``/proc/<pid>/status`` (``VmRSS`` now, ``VmHWM`` the kernel's own peak),
so the harness needs nothing beyond Linux. Readiness is read from ``/proc/net/tcp``, not by
connecting: a probe connection would be taken for a call.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

LISTEN_STATE = "0A"


def free_port() -> int:
    """A loopback port nobody listens on right now (the kernel's pick for port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int) -> bool:
    """True when some socket listens on ``port`` (IPv4 or IPv6), read from /proc/net."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == LISTEN_STATE and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in kB; (0, 0) once it is gone."""
    rss = peak = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1])
    except OSError:
        pass
    return rss, peak


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (and its reaped children) so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """CPU seconds of every live ``postgres`` process (server and backends), all databases:
    a backend that exits between two readings takes its share with it."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
        except OSError:
            continue
        total += cpu_seconds(int(entry.name))
    return total


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])
    tick = os.sysconf("SC_CLK_TCK")
    return (total - idle) / tick, total / tick


def raise_open_files_limit() -> int:
    """Lift the soft limit on open files to the hard one: every call holds a socket at both
    ends, and the children inherit the limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


@dataclass
class Child:
    """One controller process under test."""

    name: str
    argv: list[str]
    port: int
    log_path: Path
    env: dict = field(default_factory=dict)
    process: subprocess.Popen | None = None
    samples: list[tuple[float, int]] = field(default_factory=list)

    def start(self, ready_s: float = 30.0) -> Child:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                        env={**os.environ, **self.env})
        log.close()
        deadline = time.monotonic() + ready_s
        while not listening(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}: "
                                   f"see {self.log_path}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not listen on {self.port} in {ready_s} s")
            time.sleep(0.05)
        logger.info("%s listening on %d (pid %d)", self.name, self.port, self.process.pid)
        return self

    @property
    def pid(self) -> int:
        return self.process.pid if self.process else 0

    def sample(self) -> int:
        rss, _ = memory_kb(self.pid)
        if rss:
            self.samples.append((time.monotonic(), rss))
        return rss

    def cpu_s(self) -> float:
        return cpu_seconds(self.pid)

    def peak_kb(self) -> int:
        return memory_kb(self.pid)[1]

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if not self.alive():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop in %.0f s: killing pid %d", self.name, timeout,
                           self.pid)
            self.process.kill()
            self.process.wait()


def controller_argv(config_path: Path, port: int, log_level: str = "WARNING",
                    switch_interval: float | None = None,
                    experiments: list[str] | None = None) -> list[str]:
    """``pbx-control serve freeswitch`` with this interpreter (the one of the venv).

    ``switch_interval`` (seconds) replaces Python's 5 ms GIL switch interval, and
    ``experiments`` (``bench.experiments.CONTROLLER``) are applied in the controller process,
    for the what-if runs of docs/benchmarks.md; by default the product runs as shipped.
    """
    code = "from pbx_control.cli.main import main; main()"
    if experiments:
        code = (f"from pbx_control.bench.experiments import apply; apply({list(experiments)!r})"
                f"; {code}")
    if switch_interval is not None:
        code = f"import sys; sys.setswitchinterval({float(switch_interval)!r}); {code}"
    # -P: not the working directory first on sys.path, which would shadow the checkout that
    # --controller-checkout puts on PYTHONPATH whenever the bench runs from a checkout's root.
    return [sys.executable, "-P", "-c", code,
            "--config", str(config_path), "--log-level", log_level,
            "serve", "freeswitch", "--host", "127.0.0.1", "--port", str(port)]


def write_controller_config(path: Path, database_url: str, port: int, esl_port: int,
                            node: str = "bench", extra: str = "") -> Path:
    """Settings for a controller under test.

    ``carrier_profile`` is the recordings' profile name (``peer``): the channel data is
    FreeSWITCH's as recorded. The inbound event socket points at a port nobody listens on;
    the controller retries it in the background, as it would with FreeSWITCH restarting.
    """
    path.write_text(
        f'database_url = "{database_url}"\n\n'
        "[freeswitch]\n"
        'listen_host = "127.0.0.1"\n'
        f"listen_port = {port}\n"
        'pbx_addresses = ["127.0.0.1"]\n'
        'carrier_addresses = ["127.0.0.1"]\n'
        'carrier_profile = "peer"\n'
        'esl_host = "127.0.0.1"\n'
        f"esl_port = {esl_port}\n"
        f'node_name = "{node}"\n\n' + extra, encoding="utf-8")
    return path


def machine_summary(database_url: str | None = None) -> str:
    """nproc, CPU model, memory, Python and PostgreSQL versions: the header of every report."""
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
    parts = [f"{os.cpu_count()} CPUs ({cpu})", f"{int(memory) // 1024} MB RAM",
             f"Python {sys.version.split()[0]}"]
    if database_url:
        parts.append(_postgres_version(database_url))
    return ", ".join(parts)


def _postgres_version(database_url: str) -> str:
    import psycopg

    from .seed import libpq_url

    try:
        with psycopg.connect(libpq_url(database_url)) as conn:
            return "PostgreSQL " + conn.execute("SHOW server_version").fetchone()[0]
    except psycopg.Error as exc:
        return f"PostgreSQL ? ({type(exc).__name__})"


def commit_of(checkout: Path) -> str:
    """The commit a checkout is at, or why it is not known."""
    try:
        done = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"commit unknown: {type(exc).__name__}"
    return done.stdout.strip() if done.returncode == 0 else "not a git checkout"
