"""The call-side CLI end to end: ``route``, ``blacklist`` and ``cdr``, through CliRunner.

Each test runs the real ``pbx-control`` group against a SQLite file migrated by
``pbx-control db upgrade``; calls are placed with ``CallService`` on the same file.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from pbx_control.calls import CallService
from pbx_control.cli.main import cli
from pbx_control.config import Settings
from pbx_control.storage import Store

X, A, B, C = "+8617000000001", "+8613800000001", "+8613900000002", "+8615000000003"


@pytest.fixture
def run(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    monkeypatch.setenv("PBX_CONTROL_DATABASE_URL", url)
    monkeypatch.delenv("PBX_CONTROL_CONFIG", raising=False)
    runner = CliRunner()

    def invoke(*args, ok=True, input=None):
        result = runner.invoke(cli, [str(a) for a in args], input=input,
                               catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, f"{args}: exit {result.exit_code}\n{result.output}"
        else:
            assert result.exit_code != 0, f"{args}: expected failure\n{result.output}"
        return result

    invoke("db", "upgrade")
    invoke("numbers", "add", X, "17000000002")
    invoke("bind", "axb", A, B, "--x", X, "--out-id", "order-7")
    invoke.url = url
    return invoke


@pytest.fixture
def calls(run):
    """Places calls on the CLI's database, at a time of the test's choosing."""
    store = Store(run.url)
    settings = Settings(database_url=run.url)

    def place(caller, dialed=X, at=None, **events):
        clock = (lambda: at) if at else (lambda: datetime.now(UTC))
        service = CallService(store, settings, pbx="freeswitch", node="fs1", clock=clock)
        routed = service.route_inbound(caller, dialed, "uuid-1")
        for kind, fields in events.items():
            service.call_event(routed.record_id, kind, **fields)
        return routed.record_id

    yield place
    store.dispose()


def stdout_json(result):
    return json.loads(result.stdout)


# -- route ---------------------------------------------------------------------------------

def test_route_shows_whom_a_call_reaches_masked_and_through_which_x(run):
    out = run("route", "13800000001", "17000000001").stdout
    headline = out.splitlines()[0]
    assert headline.startswith(f"CONNECT +86139****0002 showing {X} (binding b")
    assert headline.endswith("reason a_to_b)")
    assert B not in out and A not in out


def test_route_explains_a_refusal(run):
    out = run("route", C, X).stdout
    assert out.startswith("REFUSE no_binding (SIP 403, Q.850 21): nothing on X is bound")
    assert "recent attempts: 0" in out


def test_route_json_has_the_decision_and_the_facts_in_full(run):
    data = stdout_json(run("route", "anonymous", X, "--json"))
    assert data["decision"] | {"customer_id": 0} == {
        "connected": False, "reason": "no_binding", "binding_id": None, "customer_id": 0,
        "detail": "", "sip_status": 403, "q850_cause": 21}
    assert data["facts"]["number"]["e164"] == X

    data = stdout_json(run("route", A, X, "--json"))
    assert data["decision"]["to"] == B
    assert data["facts"]["bindings"][0]["a"] == A


def test_route_of_an_unknown_number_and_no_record_written(run):
    assert run("route", C, "17099999999").stdout.startswith("REFUSE unknown_number (SIP 404")
    assert stdout_json(run("cdr", "list", "--json"))["records"] == []


# -- blacklist -----------------------------------------------------------------------------

def test_blacklist_add_list_remove_changes_routing(run):
    assert "blacklisted +8615000000003 on every X" in run(
        "blacklist", "add", "15000000003", "--reason", "spam").stdout
    run("blacklist", "add", C, "--x", "17000000002")
    assert run("route", C, X).stdout.startswith("REFUSE blacklisted")

    rows = stdout_json(run("blacklist", "list", "--json"))
    assert [(r["number"], r["x"], r["reason"]) for r in rows] == [
        (C, None, "spam"), (C, "+8617000000002", None)]
    assert "(every X)" in run("blacklist", "list").stdout

    run("blacklist", "remove", C)
    assert run("route", C, X).stdout.startswith("REFUSE no_binding")
    assert len(stdout_json(run("blacklist", "list", "--x", "17000000002", "--json"))) == 1


def test_blacklist_errors_are_one_line(run):
    run("blacklist", "add", C)
    duplicate = run("blacklist", "add", C, ok=False).output.strip()
    assert duplicate.startswith("Error: blacklisted_already:") and "\n" not in duplicate
    assert "invalid_input: number" in run("blacklist", "add", "12ab", ok=False).output
    assert "not_found" in run("blacklist", "remove", C, "--x", X, ok=False).output
    assert "not_found" in run("blacklist", "add", C, "--x", "17099999999", ok=False).output


# -- cdr -----------------------------------------------------------------------------------

def test_cdr_list_masks_parties_for_people_and_not_for_scripts(run, calls):
    calls(A, answered={}, ended={})
    calls(C)

    human = run("cdr", "list").stdout
    assert "+86138****0001" in human and "+86139****0002" in human and A not in human
    assert "no_binding" in human and "a_to_b" in human

    records = stdout_json(run("cdr", "list", "--json"))["records"]
    assert [(r["caller"], r["reason"]) for r in records] == [(C, "no_binding"),
                                                            (A, "a_to_b")]
    assert records[1]["out_id"] == "order-7" and records[1]["outcome"] == "answered"


def test_cdr_list_pages_with_a_cursor(run, calls):
    ids = [calls(C, at=datetime(2026, 1, 1, 12, tzinfo=UTC) + timedelta(minutes=i))
           for i in range(5)]
    first = run("cdr", "list", "--limit", "3", "--json")
    page = stdout_json(first)
    rest = stdout_json(run("cdr", "list", "--limit", "3", "--cursor", page["next_cursor"],
                           "--json"))
    seen = [r["id"] for r in page["records"] + rest["records"]]
    assert seen == ids[::-1] and rest["next_cursor"] is None
    assert "more: --cursor" in run("cdr", "list", "--limit", "3").stderr
    assert "invalid_input: cursor" in run("cdr", "list", "--cursor", "x", ok=False).output


def test_cdr_list_filters(run, calls):
    calls(A, at=datetime(2026, 1, 1, tzinfo=UTC))
    calls(B)
    calls(C, dialed="17000000002")

    def ids(*args):
        return len(stdout_json(run("cdr", "list", "--json", *args))["records"])

    assert ids("--since", "1h") == 2
    assert ids("--until", "2026-01-02T00:00:00+08:00") == 1
    assert ids("--x", "17000000002") == 1
    assert ids("--out-id", "order-7") == 2
    assert "zone" in run("cdr", "list", "--since", "2026-01-01T00:00:00", ok=False).output


def test_cdr_show_one_record(run, calls):
    record_id = calls(A)
    assert "caller: +86138****0001" in run("cdr", "show", record_id).stdout
    assert stdout_json(run("cdr", "show", record_id, "--json"))["caller"] == A
    assert "not_found" in run("cdr", "show", "0" * 32, ok=False).output


def test_cdr_export_csv_to_stdout_and_jsonl_to_a_file(run, calls, tmp_path):
    calls(A)
    calls(C)
    rows = list(csv.DictReader(io.StringIO(run("cdr", "export", "--format", "csv").stdout)))
    assert [r["caller"] for r in rows] == [A, C]

    target = tmp_path / "out.jsonl"
    result = run("cdr", "export", "--format", "jsonl", "--output", target, "--x", X)
    assert "exported 2 records" in result.stderr
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert [line["caller"] for line in lines] == [A, C]
    assert not (tmp_path / "out.jsonl.partial").exists()


def test_cdr_purge_deletes_old_records_and_their_recordings(run, calls, tmp_path):
    wav = tmp_path / "old.wav"
    wav.write_bytes(b"RIFF")
    old = datetime.now(UTC) - timedelta(days=200)
    calls(A, at=old, ended={"at": old + timedelta(seconds=5), "recording_path": str(wav)})
    calls(B)

    assert "purged 1 records and 1 recording files" in run("cdr", "purge", "--yes").stdout
    assert not wav.exists()
    assert len(stdout_json(run("cdr", "list", "--json"))["records"]) == 1


def test_cdr_purge_asks_first_and_reports_kept_records(run, calls, tmp_path):
    stuck = tmp_path / "dir.wav"
    stuck.mkdir()
    calls(A, ended={"recording_path": str(stuck)})

    run("cdr", "purge", "--older-than", "2099-01-01T00:00:00Z", input="n\n", ok=False)
    assert len(stdout_json(run("cdr", "list", "--json"))["records"]) == 1

    kept = run("cdr", "purge", "--older-than", "2099-01-01T00:00:00Z", input="y\n", ok=False)
    assert "1 records kept" in kept.output
    assert "invalid_input: older-than" in run("cdr", "purge", "--older-than", "soon",
                                               "--yes", ok=False).output


def test_cdr_purge_is_per_customer_unless_all(run, calls):
    calls(A)
    future = "2099-01-01T00:00:00Z"
    run("customers", "add", "other")
    assert "purged 0 records" in run("--customer", "other", "cdr", "purge", "--older-than",
                                     future, "--yes").stdout
    assert "purged 1 records" in run("--customer", "other", "cdr", "purge", "--older-than",
                                     future, "--all-customers", "--yes").stdout


@pytest.mark.parametrize("words", [["route"], ["blacklist"], ["blacklist", "add"], ["cdr"],
                                   ["cdr", "list"], ["cdr", "export"], ["cdr", "purge"]])
def test_every_command_has_help(run, words):
    assert "Usage:" in run(*words, "--help").stdout
