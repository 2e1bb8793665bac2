"""The benchmark harness behind ``scripts/bench_calls``, ``bench_bindings`` and ``seed_bindings``.

It lives in the package, not beside the scripts, so that the scripts stay thin and the tests
import its pieces like any other module; it touches the product only through its public
functions (``bindings.bind``, ``calls.CallService``, ``pbx-control serve freeswitch``) and the
schema. Nothing in the product imports it.

- ``workload``: the deterministic numbering both the seeder and the load generator share.
- ``seed``: a database of its own, loaded with COPY.
- ``transcript``: the FreeSWITCH recordings turned into per-call templates.
- ``peer``: FreeSWITCH's side of one outbound event-socket session (asyncio).
- ``loadgen``: offered rate, stages, ramp, the numbers reported.
- ``procs``: controllers as subprocesses, their RSS from /proc.
"""
