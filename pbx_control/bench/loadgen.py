"""Offered load: calls started at a fixed rate (open loop), a stage at a time, and what each
stage measured.

Open loop means a call starts at its scheduled time whether or not earlier ones were
answered, as calls reach FreeSWITCH; a slow controller shows as latency and failures, never
as a lower offered rate. The generator's own lateness (``lag``) and CPU are reported beside
the figures: when they grow, the generator, not the controller, is the limit.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import os
import resource
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from .peer import CallResult, Cases, PeerConfig, place_call
from .procs import machine_busy, memory_kb, postgres_cpu_seconds
from .workload import CallSpec

logger = logging.getLogger(__name__)


@dataclass
class Stage:
    """What one stage of offered load measured."""

    label: str
    rate: float
    duration_s: float
    results: list[CallResult] = field(default_factory=list)
    max_lag_s: float = 0.0
    generator_cpu_s: float = 0.0
    wall_s: float = 0.0
    rss_kb: list[int] = field(default_factory=list)
    peak_rss_kb: int = 0
    generator_rss_kb: int = 0  # at the end of the stage's calls
    controller_cpu_s: float = 0.0
    postgres_cpu_s: float = 0.0
    machine_busy_s: float = 0.0
    machine_total_s: float = 0.0

    @property
    def calls(self) -> int:
        return len(self.results)

    @property
    def failures(self) -> Counter:
        return Counter(r.failure.split(":")[0] for r in self.results if r.failure)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if r.failure)

    @property
    def clean(self) -> bool:
        return self.calls > 0 and self.failed == 0

    @property
    def good_per_s(self) -> float:
        """Calls decided rightly within the limit, per second of offered load."""
        return (self.calls - self.failed) / self.duration_s if self.duration_s else 0.0

    def latencies(self) -> list[float]:
        return sorted(r.latency for r in self.results if r.latency is not None)

    def percentile(self, p: float) -> float | None:
        values = self.latencies()
        if not values:
            return None
        return values[max(0, math.ceil(p / 100 * len(values)) - 1)]  # nearest rank

    def ended_by(self) -> Counter:
        return Counter(r.ended_by or "-" for r in self.results)

    def decisions(self) -> Counter:
        return Counter(r.decision or "none" for r in self.results)


@dataclass
class Watched:
    """How to read the controller under test: its RSS (kB) and its CPU seconds."""

    rss_kb: Callable[[], int]
    cpu_s: Callable[[], float]


async def run_stage(label: str, calls: Iterator[CallSpec], cases: Cases, config: PeerConfig,
                    rate: float, duration_s: float, watched: Watched | None = None,
                    first_serial: int = 0) -> Stage:
    """Offer ``rate`` calls/s for ``duration_s``; return when every call has ended."""
    stage = Stage(label, rate, duration_s)
    loop = asyncio.get_running_loop()
    core_uuid = str(uuid.uuid4())
    sampler = asyncio.create_task(_sample(stage, watched.rss_kb)) if watched else None
    cpu_before = _cpu_s()
    controller_before = watched.cpu_s() if watched else 0.0
    busy_before, total_before = machine_busy()
    postgres_before = postgres_cpu_seconds()

    with young_collections_only():
        tasks = []
        start = loop.time() + 0.05
        total = int(rate * duration_s)
        for n in range(total):
            due = start + n / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            stage.max_lag_s = max(stage.max_lag_s, loop.time() - due)
            spec = next(calls)
            tasks.append(loop.create_task(place_call(spec, cases, config, core_uuid,
                                                     first_serial + n)))

        stage.results = list(await asyncio.gather(*tasks))
        stage.generator_cpu_s = _cpu_s() - cpu_before
        stage.wall_s = loop.time() - start
        busy, total = machine_busy()
        stage.machine_busy_s, stage.machine_total_s = busy - busy_before, total - total_before
        stage.postgres_cpu_s = postgres_cpu_seconds() - postgres_before
        stage.generator_rss_kb = memory_kb(os.getpid())[0]
        if watched:
            sampler.cancel()
            stage.controller_cpu_s = watched.cpu_s() - controller_before
    return stage


@contextmanager
def young_collections_only():
    """No full garbage collection in the generator while a stage runs.

    A full collection walks every object of the process: with a stage's calls and results
    accumulating it stopped the generator for 50-140 ms at 300 calls/s (650 ms in a 10-minute
    stage), after which it started the calls it owed in one burst and read every decision
    late, which the controller's figures then showed. Young objects are still collected; the
    cyclic garbage of calls that outlived two young collections waits for the end of the stage
    (the generator grows by it meanwhile: printed as ``gen RSS``).
    """
    gc.collect()
    gc.freeze()  # earlier stages' results: walked by no collection during this one
    thresholds = gc.get_threshold()
    gc.set_threshold(thresholds[0], thresholds[1], 2**31 - 1)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
        gc.collect()


async def _sample(stage: Stage, sample: Callable[[], int], every_s: float = 1.0) -> None:
    while True:
        rss = sample()
        if rss:
            stage.rss_kb.append(rss)
            stage.peak_rss_kb = max(stage.peak_rss_kb, rss)
        await asyncio.sleep(every_s)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_by_minute(stage: Stage) -> list[int]:
    """The highest RSS sample (MB) of each minute of the stage (samples are 1 s apart)."""
    return [max(stage.rss_kb[i:i + 60]) // 1024 for i in range(0, len(stage.rss_kb), 60)]


def _percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}" if whole > 0 else "-"


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def stage_row(stage: Stage) -> dict:
    """One line of the results table."""
    failures = ", ".join(f"{k} {v}" for k, v in sorted(stage.failures.items())) or "0"
    return {
        "controller": stage.label,
        "offered/s": f"{stage.rate:g}",
        "s": f"{stage.duration_s:g}",
        "calls": str(stage.calls),
        "good/s": f"{stage.good_per_s:.1f}",
        "failed": failures,
        "p50 ms": ms(stage.percentile(50)),
        "p99 ms": ms(stage.percentile(99)),
        "max ms": ms(stage.latencies()[-1] if stage.latencies() else None),
        "peak RSS MB": f"{stage.peak_rss_kb / 1024:.0f}" if stage.peak_rss_kb else "-",
        "gen lag ms": ms(stage.max_lag_s),
        "ctl CPU %": _percent(stage.controller_cpu_s, stage.wall_s),
        "PG CPU %": _percent(stage.postgres_cpu_s, stage.wall_s),
        "gen CPU %": _percent(stage.generator_cpu_s, stage.wall_s),
        "gen RSS MB": f"{stage.generator_rss_kb / 1024:.0f}" if stage.generator_rss_kb else "-",
        "host CPU %": _percent(stage.machine_busy_s, stage.machine_total_s),
    }


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "(no stages)"
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    lines = [" | ".join(c.ljust(widths[c]) for c in columns),
             "-|-".join("-" * widths[c] for c in columns)]
    lines += [" | ".join(r[c].ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def now_utc() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
