"""How the freshness mode scores probe calls around an expiry (no controller needed)."""

from pbx_control.bench.freshness import Trials, _score_expiry
from pbx_control.bench.peer import CallResult
from pbx_control.bench.workload import CallSpec

SPEC = CallSpec(caller="+8613500000001", dialed="+8617000000000", expect_to=None)


def probe(started: float, decision: str, latency: float = 0.010) -> CallResult:
    return CallResult(spec=SPEC, started=started, latency=latency, decision=decision)


def test_the_delay_runs_from_expiry_to_the_first_refusal_of_a_call_started_after_it():
    trials = Trials("expiry")
    results = [probe(99.98, "bridge"), probe(100.005, "refuse", 0.012),
               probe(100.025, "refuse")]

    _score_expiry(trials, results, expires_mono=100.0)

    assert trials.trials == 1 and trials.first_call_right == 1 and trials.stale == 0
    assert abs(trials.delays[0] - 0.017) < 1e-9
    assert abs(trials.started_after[0] - 0.005) < 1e-9


def test_a_call_started_after_expiry_and_still_connected_is_stale():
    trials = Trials("expiry")

    _score_expiry(trials, [probe(100.01, "bridge"), probe(100.03, "refuse")], 100.0)

    assert trials.stale == 1 and trials.first_call_right == 0
    assert trials.row()["stale calls"] == "1"
