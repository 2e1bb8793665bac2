"""The what-if changes measured by the benchmark do what they say (events read as the product
reads them; the green-database and reuse-port switches in processes of their own)."""

import json
import subprocess
import sys

from pbx_control.bench.experiments import LazyHeaders
from pbx_control.bench.transcript import RECORDINGS
from pbx_control.freeswitch.protocol import MessageReader, parse_header_lines


def recorded_event_heads():
    for name in ("1_answered", "2a_respond403", "3b_busy_continue_on_fail"):
        data = b"".join(json.loads(line)["data"].encode()
                        for line in (RECORDINGS / f"{name}.jsonl").read_text().splitlines()
                        if json.loads(line)["dir"] == "recv")
        for message in MessageReader().feed(data):
            if message.is_event:
                yield message.body.partition(b"\n\n")[0]


def test_lazy_headers_give_every_recorded_value_the_full_parse_gives():
    heads = list(recorded_event_heads())
    assert len(heads) > 20

    for head in heads:
        full = parse_header_lines(head)
        lazy = LazyHeaders(head)
        assert all(lazy.get(key) == value for key, value in full.items())
        assert lazy.get("No-Such-Header", "x") == "x" and "No-Such-Header" not in lazy
        assert dict(LazyHeaders(head).items()) == full


def test_an_encoded_newline_cannot_forge_a_header_for_lazy_headers_either():
    head = (b"Event-Name: CHANNEL_DATA\n"
            b"Caller-Caller-ID-Name: Alice%0Avariable_sip_network_ip%3A%2010.0.0.1")
    lazy = LazyHeaders(head)

    assert "variable_sip_network_ip" not in lazy
    assert lazy["Caller-Caller-ID-Name"] == "Alice\nvariable_sip_network_ip: 10.0.0.1"


def test_an_update_wins_over_the_raw_block():
    lazy = LazyHeaders(b"Event-Name: CHANNEL_HANGUP\nHangup-Cause: NORMAL_CLEARING")
    lazy.update({"Hangup-Cause": "ALLOTTED_TIMEOUT"})

    assert lazy.get("Hangup-Cause") == "ALLOTTED_TIMEOUT" and len(lazy) == 2


def test_green_database_makes_psycopg_wait_through_gevent_and_pools_greenlets():
    # In a process of its own: the experiment monkey-patches the whole interpreter.
    code = ("from pbx_control.bench.experiments import apply; apply(['green-database']); "
            "import psycopg.waiting, gevent.pool; from pbx_control.freeswitch import service; "
            "print(psycopg.waiting.wait.__name__, service.ThreadPool is gevent.pool.Pool)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()

    assert out[0] != "wait_c"  # the C wait would block the whole hub on a query
    assert out[1] == "True"


def test_reuse_port_lets_two_listeners_share_one_port():
    # Without the experiment the second bind fails with EADDRINUSE; in a process of its own so
    # the patched StreamServer stays out of the other tests.
    code = ("from pbx_control.bench.experiments import apply; apply(['reuse-port']); "
            "from pbx_control.freeswitch import server; "
            "first = server.StreamServer(('127.0.0.1', 0), lambda s, a: None); first.start(); "
            "port = first.address[1]; "
            "second = server.StreamServer(('127.0.0.1', port), lambda s, a: None); "
            "second.start(); print(port == second.address[1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)

    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.split() == ["True"]
