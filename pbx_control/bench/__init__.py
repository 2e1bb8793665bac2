"""The benchmark harness behind ``scripts/bench_calls``, ``bench_bindings`` and ``seed_bindings``.

It lives in the package, not beside the scripts, so that the scripts stay thin and the tests
import its pieces like any other module; it touches the product only through its public
functions (``bindings.bind``, ``calls.CallService``, ``pbx-control serve freeswitch``) and the
schema. Nothing in the product imports it.

- ``workload``: the deterministic numbering both the seeder and the load generator share.
- ``seed``: a database of its own, loaded with COPY (``scripts/seed_bindings``).
- ``transcript``: the FreeSWITCH recordings turned into per-call templates.
- ``peer``: FreeSWITCH's side of one outbound event-socket session (asyncio).
- ``loadgen``: offered rate and stages, and what each stage measured.
- ``callbench``: ``scripts/bench_calls`` (ramp, sustained run, report).
- ``freshness``: ``scripts/bench_calls --freshness`` (two controllers, CLI changes).
- ``bindbench``: ``scripts/bench_bindings`` (client processes, integrity checks).
- ``procs``: controllers as subprocesses, memory and CPU from /proc.
- ``profile``: py-spy on the controller under load, summarised.

Why not the FreeSWITCH protocol double (``freeswitch/double.py``): it serves tests one call at
a time under gevent; the generator needs thousands of concurrent sessions offered open-loop
from one asyncio loop, with pre-compiled templates so that it stays a small share of the CPU.
"""
