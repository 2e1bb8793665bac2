"""``scripts/bench_calls``: calls per second, set-up latency and memory of ``pbx-control serve
freeswitch`` against PostgreSQL, beside the baseline controller, in the same run.

Each run gets a database of its own (created, migrated, seeded with COPY, dropped at the
end) unless ``--database-url`` names one seeded before with ``scripts/seed_bindings``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from . import arguments, experiments, procs, profile, seed
from .loadgen import Stage, Watched, format_table, now_utc, rss_by_minute, run_stage, stage_row
from .peer import Cases, PeerConfig
from .workload import Workload, call_mix

logger = logging.getLogger(__name__)

BASELINE_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "baseline_controller"
OURS, BASELINE = "pbx-control", "baseline"
# What the committed dialplan (freeswitch-conf/dialplan/from-carrier.xml) sets before socket.
DIALPLAN_VARIABLES = {"pbx_control_entry": "carrier"}


DEFAULT_RAMP = (25, 50, 75, 100, 125, 150, 200, 250, 300, 400, 500, 600, 800, 1000, 1200, 1500,
                2000, 2500, 3000)


def _rates(text: str) -> tuple[float, ...]:
    try:
        rates = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("rates: numbers separated by commas") from None
    if not rates or any(r <= 0 for r in rates) or list(rates) != sorted(rates):
        raise argparse.ArgumentTypeError("rates: positive and increasing")
    return rates


def _checkout(text: str) -> Path:
    path = Path(text).resolve()
    if not (path / "pbx_control" / "cli" / "main.py").is_file():
        raise argparse.ArgumentTypeError(f"{text}: not a pbx-control checkout "
                                         "(no pbx_control/cli/main.py)")
    return path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench_calls", description=__doc__.split("\n\n")[0])
    p.add_argument("--bindings", type=arguments.positive_int, default=1_000_000,
                   help="AXB bindings (1000000)")
    p.add_argument("--numbers", type=arguments.positive_int, default=10_000,
                   help="pool numbers X (10000)")
    p.add_argument("--rate", type=arguments.positive_float, default=300.0,
                   help="offered calls/s (300)")
    p.add_argument("--duration", type=arguments.positive_float, default=60.0,
                   help="seconds at --rate (60)")
    p.add_argument("--hold", type=arguments.non_negative_float, default=2.0,
                   help="seconds each call is held (2)")
    p.add_argument("--bound-share", type=arguments.share, default=0.8,
                   help="share of calls from a bound party; the rest are strangers (0.8)")
    p.add_argument("--ramp", action="store_true",
                   help="ramp the offered rate for both controllers instead of one --rate")
    p.add_argument("--ramp-rates", type=_rates, default=DEFAULT_RAMP,
                   help="offered rates of the ramp, comma-separated "
                        f"({','.join(f'{r:g}' for r in DEFAULT_RAMP)})")
    p.add_argument("--stage-seconds", type=arguments.positive_float, default=10.0,
                   help="length of a ramp stage (10)")
    p.add_argument("--warmup", type=arguments.non_negative_float, default=3.0,
                   help="seconds of 20 calls/s to each controller before measuring (3)")
    p.add_argument("--no-baseline", action="store_true", help="measure pbx-control only")
    p.add_argument("--database-url", help="an already seeded database (seed_bindings)")
    p.add_argument("--admin-url", default=seed.DEFAULT_ADMIN_URL,
                   help="PostgreSQL server where the run's own database is created")
    p.add_argument("--keep-database", action="store_true")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    p.add_argument("--switch-interval", type=arguments.positive_float,
                   help="experiment: the controller's GIL switch interval in seconds "
                        "(Python's default is 0.005)")
    p.add_argument("--experiment", action="append", choices=experiments.CONTROLLER,
                   default=[], help="what-if change applied in the controller (repeatable)")
    p.add_argument("--workers", type=arguments.int_from_to(1, 16), default=1,
                   help="experiment: this many pbx-control processes on one port "
                        "(SO_REUSEPORT), figures summed over them; --profile records "
                        "the first only (1)")
    p.add_argument("--controller-checkout", type=_checkout, metavar="DIR",
                   help="run the controller from this checkout's pbx_control (e.g. a git "
                        "worktree of an earlier commit, same dependencies), the generator "
                        "from this one: before and after a change with the same generator")
    p.add_argument("--profile", type=Path,
                   help="record pbx-control with py-spy during the run (collapsed stacks "
                        "to this file, top functions printed); needs py-spy installed")
    p.add_argument("--freshness", action="store_true",
                   help="measure how soon bind, unbind and expiry decide calls on two "
                        "controllers, instead of the load run")
    p.add_argument("--trials", type=arguments.positive_int, default=20,
                   help="freshness trials per change (20)")
    return p


@dataclass
class Run:
    args: argparse.Namespace
    workdir: Path
    database_url: str
    created_database: bool


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    _check(p, args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    procs.raise_open_files_limit()
    with arguments.database_errors("bench_calls"):
        return _main(args)


def _check(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What the parser cannot see alone, refused before anything is created."""
    arguments.workload(p, args)
    if args.profile and not profile.available():
        p.error("--profile needs py-spy: .venv/bin/pip install py-spy")
    if args.freshness:
        given = [name for name, used in (("--json", args.json), ("--profile", args.profile),
                                         ("--ramp", args.ramp), ("--workers", args.workers > 1))
                 if used]
        if given:
            p.error(f"{', '.join(given)}: for a load run, not --freshness")
    arguments.output_file(p, "--json", args.json)
    arguments.output_file(p, "--profile", args.profile)


def _main(args: argparse.Namespace) -> int:
    run = _prepare(args)
    try:
        if args.freshness:
            from .freshness import run_freshness

            return run_freshness(run)
        return _load_run(run)
    finally:
        if run.created_database and not args.keep_database:
            seed.drop_database(args.admin_url, run.database_url)
            logger.info("database dropped")


def _prepare(args) -> Run:
    workload = Workload(args.bindings, args.numbers)
    if args.database_url:
        seed.check_seeded(args.database_url, workload)
        url = args.database_url
    else:
        url, _ = seed.create_and_seed(args.admin_url, workload)
    workdir = Path(tempfile.mkdtemp(prefix="bench_calls_"))
    logger.info("logs and settings in %s", workdir)
    return Run(args, workdir, url, not args.database_url)


def start_controller(run: Run, name: str = OURS, node: str = "bench",
                     extra: str = "") -> procs.Child:
    """``pbx-control serve freeswitch`` on the run's database; ``extra`` TOML is appended."""
    port = procs.free_port()
    config = procs.write_controller_config(run.workdir / f"{name}.toml", run.database_url,
                                           port, procs.free_port(), node=node, extra=extra)
    argv = procs.controller_argv(config, port, switch_interval=run.args.switch_interval,
                                 experiments=run.args.experiment)
    return procs.Child(name, argv, port, run.workdir / f"{name}.log",
                       env=controller_env(run)).start()


def controller_env(run: Run) -> dict:
    # The inbound event socket is required configuration; nothing listens on its port here.
    env = {"PBX_CONTROL_FREESWITCH_ESL_PASSWORD": "bench-no-inbound-socket"}
    checkout = getattr(run.args, "controller_checkout", None)
    if checkout:
        env["PYTHONPATH"] = str(checkout)
    return env


STARTUP_S = 3.0


class Workers:
    """Several controller processes on one port, seen by the stages as one controller: RSS
    and CPU are their sums (``--workers``, an experiment)."""

    def __init__(self, children: list[procs.Child]):
        self.children = children
        self.port = children[0].port
        self.samples: list[tuple[float, int]] = []

    @property
    def pid(self) -> int:
        return self.children[0].pid

    def sample(self) -> int:
        rss = sum(child.sample() for child in self.children)
        if rss:
            self.samples.append((self.children[0].samples[-1][0], rss))
        return rss

    def cpu_s(self) -> float:
        return sum(child.cpu_s() for child in self.children)

    def peak_kb(self) -> int:
        return max((rss for _, rss in self.samples), default=0)

    def alive(self) -> bool:
        return all(child.alive() for child in self.children)

    def stop(self, timeout: float = 10.0) -> None:
        for child in self.children:
            child.stop(timeout)


def start_workers(run: Run, count: int) -> Workers:
    port = procs.free_port()
    children = []
    for k in range(count):
        name = f"{OURS}-w{k}"
        config = procs.write_controller_config(run.workdir / f"{name}.toml", run.database_url,
                                               port, procs.free_port(), node=f"bench-w{k}")
        argv = procs.controller_argv(config, port, switch_interval=run.args.switch_interval,
                                     experiments=[*run.args.experiment, "reuse-port"])
        child = procs.Child(name, argv, port, run.workdir / f"{name}.log",
                            env=controller_env(run))
        # Once worker 0 listens, the port says nothing of the others: each is given the
        # time a controller takes to start, and must still be running after it.
        children.append(child.start())
        if k > 0:
            time.sleep(STARTUP_S)
            if not child.alive():
                raise RuntimeError(f"{name} exited: see {child.log_path}")
    return Workers(children)


def start_baseline(run: Run) -> procs.Child:
    port = procs.free_port()
    argv = [sys.executable, str(BASELINE_SCRIPT), "--port", str(port)]
    return procs.Child(BASELINE, argv, port, run.workdir / f"{BASELINE}.log").start()


def _load_run(run: Run) -> int:
    args = run.args
    children = {OURS: start_controller(run) if args.workers == 1
                else start_workers(run, args.workers)}
    if not args.no_baseline:
        children[BASELINE] = start_baseline(run)
    profiler = None
    try:
        profiler = profile.start(children[OURS].pid, args.profile) if args.profile else None
        stages = asyncio.run(_stages(run, children))
    finally:
        if profiler:
            profile.stop(profiler)
        for child in children.values():
            child.stop()
    _report(run, stages, children)
    if args.profile:
        print(profile.summary(args.profile))
    return 0


async def _stages(run: Run, children: dict[str, procs.Child]) -> list[Stage]:
    args = run.args
    cases = Cases.load(DIALPLAN_VARIABLES)
    calls = call_mix(Workload(args.bindings, args.numbers), args.bound_share)
    calls = itertools.chain([next(calls)], calls)  # the shuffle of the bindings, done now
    serial = 0

    async def stage(name: str, rate: float, seconds: float) -> Stage:
        nonlocal serial
        child = children[name]
        config = PeerConfig("127.0.0.1", child.port, hold_s=args.hold,
                            check_routing=name == OURS)
        watched = Watched(child.sample, child.cpu_s)
        await _settle(children)
        result = await run_stage(name, calls, cases, config, rate, seconds, watched,
                                 first_serial=serial)
        for other, process in children.items():
            if not process.alive():
                raise SystemExit(f"bench_calls: {other} exited during the run at {rate:g}/s "
                                 f"(see {run.workdir})")
        serial += result.calls
        logger.info("%s at %g/s: %s", name, rate, stage_row(result))
        return result

    for name in children:
        # Connections to PostgreSQL, statement caches, the thread pool: made on first use,
        # as by the first calls after a restart; not what a running controller costs.
        if args.warmup > 0:
            await stage(name, 20.0, args.warmup)

    if not args.ramp:
        stages = [await stage(OURS, args.rate, args.duration)]
        if BASELINE in children:
            stages.append(await stage(BASELINE, args.rate, args.duration))
        return stages
    return await _ramp(args, list(children), stage)


async def _settle(children: dict[str, procs.Child], idle_share: float = 0.05,
                  limit_s: float = 120.0) -> None:
    """Wait until every controller is idle: one that was overloaded goes on working through
    the calls it accepted after the generator gave up on them, which would load the next
    stage, whichever controller it measures."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    before = {name: child.cpu_s() for name, child in children.items()}
    while loop.time() - began < limit_s:
        await asyncio.sleep(1.0)
        now = {name: child.cpu_s() for name, child in children.items()}
        busy = [n for n in now if now[n] - before[n] > idle_share]
        if not busy:
            break
        before = now
    waited = loop.time() - began
    if waited > 1.5:
        logger.info("waited %.0f s for the controllers to be idle", waited)


async def _ramp(args, names: list[str], stage) -> list[Stage]:
    """Both controllers at each rate in turn, each until its first stage with a failure."""
    stages, failed = [], set()
    for rate in args.ramp_rates:
        for name in names:
            if name not in failed:
                result = await stage(name, rate, args.stage_seconds)
                stages.append(result)
                if not result.clean:
                    failed.add(name)
        if len(failed) == len(names):
            break
    return stages


def highest_clean(stages: list[Stage], name: str) -> float | None:
    rates = [s.rate for s in stages if s.label == name and s.clean]
    return max(rates) if rates else None


def _targets(stages: list[Stage]) -> list[str]:
    """The issue's targets, for each stage of ours offered at least 300 calls/s for 60 s."""
    lines = []
    for stage in stages:
        if stage.label != OURS or stage.rate < 300 or stage.duration_s < 60:
            continue
        p99 = stage.percentile(99)
        met = stage.clean and p99 is not None and p99 <= 0.010
        lines.append(f"target {stage.rate:g}/s for {stage.duration_s:g} s with no failed call "
                     f"and p99 <= 10 ms: {'met' if met else 'missed'} ({stage.failed} failed, "
                     f"p99 {p99 * 1000 if p99 else 0:.1f} ms)")
    for stage in stages:
        if stage.label == OURS and stage.peak_rss_kb:
            if stage.peak_rss_kb > 300 * 1024:
                lines.append(f"target RSS <= 300 MB missed at {stage.rate:g}/s: "
                             f"{stage.peak_rss_kb // 1024} MB")
    return lines


def _report(run: Run, stages: list[Stage], children: dict[str, procs.Child]) -> None:
    args = run.args
    print(f"\nbench_calls, {now_utc()}")
    print(f"machine: {procs.machine_summary(run.database_url)}")
    if args.experiment or args.switch_interval is not None or args.workers > 1:
        applied = [*args.experiment, *([f"{args.workers} workers on one port (reuse-port)"]
                                       if args.workers > 1 else [])]
        print(f"EXPERIMENT, not the product as shipped: {', '.join(applied)}, "
              f"switch interval {args.switch_interval or 'default'}")
    if args.controller_checkout:
        print(f"controller: pbx_control of {args.controller_checkout} "
              f"({procs.commit_of(args.controller_checkout)})")
    print(f"workload: {args.bindings} AXB bindings on {args.numbers} numbers, "
          f"{args.bound_share:.0%} of calls from a bound party, hold {args.hold:g} s, "
          f"failed = no right bridge or refusal within 1 s\n")
    print(format_table([stage_row(s) for s in stages]))
    summary = _summary(stages, children)
    for line in summary["lines"]:
        print(line)
    print(f"\nlogs: {run.workdir}")
    if args.json:
        plain = (str, int, float, bool, type(None))
        given = {k: v if isinstance(v, plain) else list(v) if isinstance(v, (list, tuple))
                 else str(v) for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"args": given,
                                         "stages": [stage_row(s) for s in stages],
                                         "summary": summary["figures"]}, indent=2))


def never_failed(stages: list[Stage], name: str) -> bool:
    """No stage of ``name`` failed: its highest clean rate is only the highest rate offered."""
    return all(s.clean for s in stages if s.label == name)


def _clean_text(stages: list[Stage], name: str) -> str:
    best = highest_clean(stages, name)
    if best is None:
        return "none"
    if never_failed(stages, name):
        return f"{best:g} or more (no stage failed up to the highest rate offered)"
    return f"{best:g}"


def _ratio(stages: list[Stage], ours: float, base: float, figures: dict) -> list[str]:
    """The ratio of the highest clean rates, said as a bound where a controller never failed:
    its highest clean rate is then only the highest rate offered to it."""
    ours_capped, base_capped = never_failed(stages, OURS), never_failed(stages, BASELINE)
    if ours_capped and base_capped:
        return [f"ratio {OURS} / {BASELINE}: not measured (neither failed at the rates offered)"]
    figures["ratio"] = ours / base
    bound = "at most " if base_capped else "at least " if ours_capped else ""
    return [f"ratio {OURS} / {BASELINE}: {bound}{ours / base:.2f} (target at least 0.5)"]


def _summary(stages: list[Stage], children: dict[str, procs.Child]) -> dict:
    lines, figures = [], {}
    ours = highest_clean(stages, OURS)
    figures["ours_highest_clean"] = ours
    figures["ours_never_failed"] = never_failed(stages, OURS)
    lines.append(f"\n{OURS}: highest offered rate with no failed call: "
                 f"{_clean_text(stages, OURS)}")
    if BASELINE in children:
        base = highest_clean(stages, BASELINE)
        figures["baseline_highest_clean"] = base
        figures["baseline_never_failed"] = never_failed(stages, BASELINE)
        lines.append(f"{BASELINE}: highest offered rate with no failed call: "
                     f"{_clean_text(stages, BASELINE)}")
        if ours and base:
            lines += _ratio(stages, ours, base, figures)
    lines += _targets(stages)
    for stage in (s for s in stages if s.label == OURS and s.rss_kb):
        minutes = rss_by_minute(stage)
        if len(minutes) > 1:
            lines.append(f"{OURS} RSS by minute at {stage.rate:g}/s (MB): "
                         + " ".join(map(str, minutes)))
            figures.setdefault("rss_by_minute", {})[str(stage.rate)] = minutes
    decided = [s for s in stages if s.label == OURS]
    if decided:
        lines.append(f"{OURS} decisions: " + ", ".join(
            f"{k} {v}" for k, v in sum((s.decisions() for s in decided), Counter()).items()))
        lines.append(f"{OURS} sessions ended by: " + ", ".join(
            f"{k} {v}" for k, v in sum((s.ended_by() for s in decided), Counter()).items()))
    return {"lines": lines, "figures": figures}
