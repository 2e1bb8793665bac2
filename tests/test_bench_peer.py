"""The load generator's FreeSWITCH side against tiny in-test controllers: it answers their
commands, judges their decisions, replays the case and ends the session as FreeSWITCH does."""

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pbx_control.bench import procs
from pbx_control.bench.loadgen import Stage, run_stage, stage_row
from pbx_control.bench.peer import CallResult, Cases, PeerConfig, parse_bridge, place_call
from pbx_control.bench.workload import CallSpec

ROOT = Path(__file__).resolve().parents[1]
BOUND = CallSpec(caller="+8613800000007", dialed="+8617000000003", expect_to="+8613900000007")
STRANGER = CallSpec(caller="+8613700000001", dialed="+8617000000003", expect_to=None)
CASES = Cases.load({"pbx_control_entry": "carrier"})


async def _read_message(reader) -> tuple[dict, bytes]:
    head = (await reader.readuntil(b"\n\n")).decode()
    headers = dict(line.split(": ", 1) for line in head.strip().split("\n") if ": " in line)
    body = b""
    if "Content-Length" in headers:
        body = await reader.readexactly(int(headers["Content-Length"]))
    return headers, body


def controller(decide, linger=True, seen=None, before=(), events=None):
    """A controller of a few lines: connect, myevents, [linger], ``before`` commands, the
    decision, then events until CHANNEL_HANGUP_COMPLETE, then exit.
    ``decide(channel_data) -> sendmsg bytes``; ``events`` collects (name, application)."""

    async def handle(reader, writer):
        writer.write(b"connect\n\n")
        data, _ = await _read_message(reader)
        if seen is not None:
            seen.append(data)
        for command in [b"myevents\n\n"] + ([b"linger\n\n"] if linger else []) + list(before):
            writer.write(command)
            await _read_message(reader)
        command = decide(data)
        if command is None:
            await asyncio.sleep(10)
            return
        writer.write(command)
        try:
            while True:
                headers, body = await _read_message(reader)
                if events is not None and body:
                    event = dict(line.split(": ", 1) for line in body.decode().split("\n")
                                 if ": " in line)
                    events.append((event.get("Event-Name"), event.get("Application")))
                if b"Event-Name: CHANNEL_HANGUP_COMPLETE" in body:
                    break
            if linger:
                writer.write(b"exit\n\n")
                await _read_message(reader)
                await reader.read()
        except asyncio.IncompleteReadError:
            pass
        writer.close()

    return handle


def _bridge(to: str, shown: str) -> bytes:
    return (f"sendmsg\ncall-command: execute\nexecute-app-name: bridge\nexecute-app-arg: "
            f"{{origination_caller_id_number={shown},origination_caller_id_name={shown}}}"
            f"sofia/gateway/carrier/{to}\n\n").encode()


def right_decision(data: dict) -> bytes:
    caller = data["Caller-Caller-ID-Number"]
    if caller == BOUND.caller[1:]:
        return _bridge(BOUND.expect_to[1:], data["Caller-Destination-Number"])
    return b"sendmsg\ncall-command: execute\nexecute-app-name: respond\nexecute-app-arg: 403\n\n"


def run_call(handle, spec: CallSpec, **config) -> CallResult:
    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            settings = PeerConfig("127.0.0.1", port, hold_s=0.05, linger_wait_s=2.0, **config)
            return await place_call(spec, CASES, settings, "core-uuid", 1)
        finally:
            server.close()

    return asyncio.run(main())


def test_a_right_bridge_for_a_bound_party_is_a_good_call_that_ends_on_exit():
    seen = []
    result = run_call(controller(right_decision, seen=seen), BOUND)

    assert result.ok, result.failure
    assert result.decision == "bridge" and result.ended_by == "exit"
    assert 0 < result.latency < 1
    assert seen[0]["Caller-Destination-Number"] == "8617000000003"
    assert seen[0]["variable_pbx_control_entry"] == "carrier"


def test_applications_queued_before_the_bridge_report_their_execution_before_it():
    events = []
    set_var = (b"sendmsg\ncall-command: execute\nexecute-app-name: set\n"
               b"execute-app-arg: hangup_after_bridge=true\n\n")
    result = run_call(controller(right_decision, before=[set_var], events=events), BOUND)

    assert result.ok, result.failure
    executed = [e for e in events if e[0].startswith("CHANNEL_EXECUTE")]
    assert executed[:3] == [("CHANNEL_EXECUTE", "set"), ("CHANNEL_EXECUTE_COMPLETE", "set"),
                            ("CHANNEL_EXECUTE", "bridge")]
    assert events[-1] == ("CHANNEL_HANGUP_COMPLETE", None)


def test_a_refused_stranger_is_a_good_call():
    result = run_call(controller(right_decision), STRANGER)

    assert result.ok, result.failure
    assert result.decision == "refuse"


@pytest.mark.parametrize("decide, failure", [
    (lambda data: _bridge("8613900000099", data["Caller-Destination-Number"]), "wrong_party"),
    (lambda data: _bridge(BOUND.expect_to[1:], "8613800000007"), "x_not_shown"),
    (lambda data: b"sendmsg\ncall-command: hangup\nhangup-cause: CALL_REJECTED\n\n",
     "refused_bound_party"),
    (lambda data: b"sendmsg\ncall-command: hangup\nhangup-cause: NORMAL_TEMPORARY_FAILURE\n\n",
     "unavailable_503"),
])
def test_a_wrong_decision_for_a_bound_party_is_a_failed_call(decide, failure):
    assert run_call(controller(decide), BOUND).failure == failure


def test_a_bridged_stranger_is_a_failed_call():
    result = run_call(controller(lambda d: _bridge("8613900000007", "8617000000003")), STRANGER)

    assert result.failure == "bridged_stranger"


def test_no_decision_in_time_is_a_failed_call():
    result = run_call(controller(lambda data: None), BOUND, give_up_s=0.3)

    assert result.failure == "no_decision" and result.latency is None


def test_without_linger_the_generator_closes_after_the_last_event_as_freeswitch_does():
    result = run_call(controller(right_decision, linger=False), BOUND)

    assert result.ok and result.ended_by == "close"


def test_a_controller_that_refuses_connections_gives_a_connect_error():
    port = procs.free_port()
    result = asyncio.run(place_call(BOUND, CASES, PeerConfig("127.0.0.1", port), "c", 1))

    assert result.failure.startswith("connect_error")


def test_bridge_arguments_are_read_into_variables_and_dial_string():
    variables, dial = parse_bridge("{a=1,b='x,y'}[c=3]sofia/gateway/carrier/8613900000007")

    assert variables == {"a": "1", "b": "x,y", "c": "3"}
    assert dial == "sofia/gateway/carrier/8613900000007"


def test_a_stage_offers_its_rate_and_reports_every_call():
    async def main():
        server = await asyncio.start_server(controller(right_decision), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        calls = iter([BOUND, STRANGER] * 10)
        try:
            return await run_stage("test", calls, CASES, PeerConfig("127.0.0.1", port, 0.05),
                                   rate=40, duration_s=0.25)
        finally:
            server.close()

    stage: Stage = asyncio.run(main())

    assert stage.calls == 10 and stage.clean
    assert stage.decisions() == {"bridge": 5, "refuse": 5}
    assert stage_row(stage)["failed"] == "0"
    assert stage.percentile(50) <= stage.percentile(99) <= stage.latencies()[-1]


def test_the_baseline_controller_bridges_every_call():
    port = procs.free_port()
    process = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "baseline_controller"),
                                "--port", str(port)])
    try:
        deadline = time.monotonic() + 20
        while not procs.listening(port):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        config = PeerConfig("127.0.0.1", port, hold_s=0.05, check_routing=False)
        result = asyncio.run(place_call(STRANGER, CASES, config, "core", 1))
    finally:
        process.terminate()
        process.wait(10)

    assert result.ok and result.decision == "bridge" and result.ended_by == "close"


def test_memory_and_cpu_of_a_process_are_read_from_proc():
    rss, peak = procs.memory_kb(os.getpid())

    assert 0 < rss <= peak
    assert procs.cpu_seconds(os.getpid()) > 0
    assert procs.memory_kb(2**22 + 1) == (0, 0)


class FakeChild:
    def __init__(self, port, rss_kb, cpu_s):
        self.port, self.rss_kb, self.cpu = port, rss_kb, cpu_s
        self.samples = []

    def sample(self):
        self.samples.append((len(self.samples), self.rss_kb))
        return self.rss_kb

    def cpu_s(self):
        return self.cpu


def test_workers_are_measured_as_one_controller_with_summed_memory_and_cpu():
    from pbx_control.bench.callbench import Workers

    first, second = FakeChild(5060, 100, 1.5), FakeChild(5060, 60, 2.0)
    workers = Workers([first, second])
    workers.sample()
    second.rss_kb = 90
    workers.sample()

    assert workers.port == 5060 and workers.peak_kb() == 190
    assert workers.cpu_s() == 3.5


@pytest.mark.parametrize("value", ["0", "17", "two"])
def test_a_bad_worker_count_is_refused_by_the_command_line(value, capsys):
    from pbx_control.bench.callbench import parser

    with pytest.raises(SystemExit):
        parser().parse_args(["--workers", value])

    assert "workers:" in capsys.readouterr().err


def test_a_stage_runs_without_full_collections_and_restores_the_collector_after():
    import gc

    from pbx_control.bench.loadgen import young_collections_only

    before = gc.get_threshold()
    earlier = FakeChild(0, 0, 0)
    with young_collections_only():
        assert gc.get_threshold()[:2] == before[:2] and gc.get_threshold()[2] >= 2**31 - 1
        assert not any(o is earlier for o in gc.get_objects())  # frozen, not walked

    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    assert any(o is earlier for o in gc.get_objects())


def test_the_controller_can_run_from_another_checkout_and_a_non_checkout_is_refused(
        tmp_path, capsys):
    from argparse import Namespace

    from pbx_control.bench.callbench import Run, controller_env, parser

    (tmp_path / "pbx_control" / "cli").mkdir(parents=True)
    (tmp_path / "pbx_control" / "__init__.py").write_text("")
    (tmp_path / "pbx_control" / "cli" / "main.py").write_text("")
    args = parser().parse_args(["--controller-checkout", str(tmp_path)])
    env = controller_env(Run(args, tmp_path, "", False))
    # The controller's own interpreter line, run from this checkout's root as the README does.
    argv = procs.controller_argv(tmp_path / "x.toml", 1)
    argv = argv[:argv.index("-c")] + ["-c", "import pbx_control; print(pbx_control.__file__)"]
    where = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True,
                           check=True, cwd=Path(__file__).resolve().parents[1]).stdout

    assert where.startswith(str(tmp_path))
    assert "PYTHONPATH" not in controller_env(Run(Namespace(controller_checkout=None),
                                                  tmp_path, "", False))
    with pytest.raises(SystemExit):
        parser().parse_args(["--controller-checkout", str(tmp_path / "pbx_control")])
    assert "not a pbx-control checkout" in capsys.readouterr().err


def _stage(label, rate, failure=None):
    stage = Stage(label, rate, 1.0)
    stage.results = [CallResult(spec=None, started=0.0, latency=0.001, failure=failure)]
    return stage


def test_the_ratio_is_a_bound_where_a_controller_never_failed():
    from pbx_control.bench.callbench import _ratio

    ramp = [_stage("pbx-control", 100), _stage("pbx-control", 200, "late"),
            _stage("baseline", 100), _stage("baseline", 200), _stage("baseline", 400, "late")]
    figures = {}

    assert _ratio(ramp, 100, 200, figures) == [
        "ratio pbx-control / baseline: 0.50 (target at least 0.5)"]
    assert figures["ratio"] == 0.5
    assert "at most 0.25" in _ratio(ramp[:4], 100, 400, {})[0]
    assert "at least 2.00" in _ratio([ramp[0], *ramp[2:]], 400, 200, {})[0]
    assert "not measured" in _ratio([ramp[0], ramp[2]], 100, 100, {})[0]
