"""``scripts/bench_calls --freshness``: how soon a bind, an unbind and an expiry decide calls
on two controller processes sharing one database.

Bind and unbind go through the real CLI (``pbx-control bind axb``, ``pbx-control unbind``);
the clock starts when the command has exited. Calls are then placed on both controllers at
once, again and again until each decides as the change requires; the delay is from the
command's exit to that decision arriving, so it includes one call set-up. Expiry: calls are
placed every few milliseconds around the binding's ``expires_at``; the delay is from
``expires_at`` to the first refusal, and a call started after ``expires_at`` that was still
connected is counted as stale.

The controllers here allow many attempts per caller (``rate_limit_attempts``): probing one
pair this often would otherwise trip the per-caller rate limit, which is not what is measured.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from . import procs
from .loadgen import now_utc
from .peer import CallResult, Cases, PeerConfig, place_call
from .workload import CallSpec, fresh_party, x_number

logger = logging.getLogger(__name__)

GIVE_UP_S = 2.0
EXPIRY_AHEAD_S = 3.0  # expires_at is this far after the bind returns
# Expiry: a bound party calls X on each controller at these times before expires_at (they
# must still connect), then again just after it, each call after the previous one ended, until
# refused. Few calls, so the probes do not load the controllers they measure (a probe every
# 10-20 ms on both overloaded this host and measured its own queueing).
BEFORE_EXPIRY_S = (0.15, 0.10, 0.05)
AFTER_EXPIRY_S = 0.001
TARGET_S = 0.050


@dataclass
class Trials:
    change: str
    delays: list[float] = field(default_factory=list)
    first_call_right: int = 0
    trials: int = 0
    stale: int = 0  # expiry: calls started after expires_at and still connected
    setups: list[float] = field(default_factory=list)  # set-up latency of every probe call
    # expiry: how long after expires_at the first call decided the new way was started
    started_after: list[float] = field(default_factory=list)

    def row(self) -> dict:
        worst = max(self.delays) if self.delays else None
        setups = sorted(self.setups)
        return {
            "change": self.change, "trials x controllers": str(self.trials),
            "next call right": f"{self.first_call_right}/{self.trials}",
            "worst delay ms": "-" if worst is None else f"{worst * 1000:.1f}",
            "median ms": "-" if not self.delays else
            f"{sorted(self.delays)[len(self.delays) // 2] * 1000:.1f}",
            "stale calls": str(self.stale),
            "probe set-up p50 ms": f"{setups[len(setups) // 2] * 1000:.1f}" if setups else "-",
            "first new-way call started after, worst ms":
                f"{max(self.started_after) * 1000:.1f}" if self.started_after else "-",
        }


def run_freshness(run) -> int:
    from .callbench import start_controller

    extra = "[routing]\nrate_limit_attempts = 1000000\n"
    controllers = [start_controller(run, f"pbx-control-{n}", node=f"bench-{n}", extra=extra)
                   for n in (1, 2)]
    try:
        results = asyncio.run(_all(run, controllers))
    finally:
        for child in controllers:
            child.stop()
    _report(run, results)
    worst = max((d for r in results for d in r.delays), default=None)
    ok = worst is not None and worst <= TARGET_S and not any(r.stale for r in results)
    return 0 if ok else 1


async def _all(run, controllers) -> list[Trials]:
    cases = Cases.load({"pbx_control_entry": "carrier"})
    configs = [PeerConfig("127.0.0.1", c.port, hold_s=0.05, linger_wait_s=2.0)
               for c in controllers]
    config_file = run.workdir / "pbx-control-1.toml"
    bind, unbind, expiry = Trials("bind"), Trials("unbind"), Trials("expiry")
    base = 70_000_000 + (uuid.uuid4().int % 1000) * 10_000  # fresh pairs on every run
    # The first calls of a process open its database connections: not what is measured.
    warm = CallSpec(fresh_party(base + 9999), x_number(0), None)
    for _ in range(5):
        await asyncio.gather(*(place_call(warm, cases, c, str(uuid.uuid4()), 0)
                               for c in configs))
    for t in range(run.args.trials):
        a, b = fresh_party(base + 2 * t), fresh_party(base + 2 * t + 1)
        binding = await _cli(config_file, "bind", "axb", a, b, "--json")
        await _until(bind, cases, configs, CallSpec(a, binding["x"], b))
        await _cli(config_file, "unbind", binding["id"])
        await _until(unbind, cases, configs, CallSpec(a, binding["x"], None))
        await _expiry(expiry, cases, configs, config_file, base + 5000 + 2 * t)
    return [bind, unbind, expiry]


async def _cli(config_file, *args: str) -> dict:
    """Run ``pbx-control``; returns its JSON output (if any) once it has exited."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from pbx_control.cli.main import main; main()",
        "--config", str(config_file), *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"pbx-control {args[0]} failed: {err.decode().strip()}")
    text = out.decode().strip()
    return json.loads(text) if text.startswith("{") else {}


async def _until(trials: Trials, cases, configs, spec: CallSpec) -> None:
    """Calls on every controller at once, each until it decides as ``spec`` requires."""
    returned = asyncio.get_running_loop().time()
    await asyncio.gather(*(_until_one(trials, cases, c, spec, returned) for c in configs))


async def _until_one(trials: Trials, cases, config, spec: CallSpec, returned: float) -> None:
    loop = asyncio.get_running_loop()
    trials.trials += 1
    first = True
    while loop.time() - returned < GIVE_UP_S:
        result = await place_call(spec, cases, config, str(uuid.uuid4()), 0)
        if result.latency is not None:
            trials.setups.append(result.latency)
        if result.ok:
            trials.delays.append(result.started + result.latency - returned)
            trials.first_call_right += first
            return
        first = False
        logger.info("%s: a call after the change was still decided the old way (%s)",
                    trials.change, result.failure)


async def _expiry(trials: Trials, cases, configs, config_file, index: int) -> None:
    a, b = fresh_party(index), fresh_party(index + 1)
    expires = datetime.now(UTC) + timedelta(seconds=EXPIRY_AHEAD_S)
    binding = await _cli(config_file, "bind", "axb", a, b, "--expires", expires.isoformat(),
                         "--json")
    loop = asyncio.get_running_loop()
    expires_mono = loop.time() + (expires - datetime.now(UTC)).total_seconds()

    spec = CallSpec(a, binding["x"], None)
    before: list[tuple[int, asyncio.Task]] = []
    for lead in BEFORE_EXPIRY_S:
        await asyncio.sleep(max(0.0, expires_mono - lead - loop.time()))
        before += [(n, loop.create_task(place_call(spec, cases, config, str(uuid.uuid4()), 0)))
                   for n, config in enumerate(configs)]
    await asyncio.sleep(max(0.0, expires_mono + AFTER_EXPIRY_S - loop.time()))
    after = await asyncio.gather(*(_until_refused(cases, config, spec, expires_mono)
                                   for config in configs))
    for n in range(len(configs)):
        results = [await task for m, task in before if m == n] + after[n]
        _score_expiry(trials, results, expires_mono)


async def _until_refused(cases, config, spec: CallSpec, expires_mono: float) -> list:
    """The calls after expires_at, the next starting when the previous has been decided."""
    loop = asyncio.get_running_loop()
    results: list[CallResult] = []
    while loop.time() < expires_mono + GIVE_UP_S:
        result = await place_call(spec, cases, config, str(uuid.uuid4()), 0)
        results.append(result)
        if result.decision == "refuse":
            break
    return results


def _score_expiry(trials: Trials, results: list[CallResult], expires_mono: float) -> None:
    trials.trials += 1
    trials.setups += [r.latency for r in results if r.latency is not None]
    after = sorted((r for r in results if r.started >= expires_mono and r.latency is not None),
                   key=lambda r: r.started)
    trials.stale += sum(1 for r in after if r.decision == "bridge")
    refused = [r for r in after if r.decision == "refuse"]
    if refused:
        trials.delays.append(refused[0].started + refused[0].latency - expires_mono)
        trials.started_after.append(refused[0].started - expires_mono)
        trials.first_call_right += after[0].decision == "refuse"


def _report(run, results: list[Trials]) -> None:
    from .loadgen import format_table

    print(f"\nbench_calls --freshness, {now_utc()}")
    print(f"machine: {procs.machine_summary(run.database_url)}")
    print("two pbx-control serve freeswitch processes on one PostgreSQL database; bind and "
          "unbind by the CLI, delay from its exit to the first call decided the new way on "
          "each controller (one call set-up included); expiry from expires_at\n")
    print(format_table([r.row() for r in results]))
    print(f"\ntarget: every delay at most {TARGET_S * 1000:.0f} ms, no stale call")
