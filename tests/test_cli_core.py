"""The provisioning CLI end to end: db, numbers, bind, unbind, bindings, groups, softphones.

Each test runs the real ``pbx-control`` group through CliRunner against a SQLite file
migrated with ``pbx-control db upgrade``; the output is in every assertion message.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import update

from pbx_control.cli.main import cli
from pbx_control.customers import set_customer_status
from pbx_control.storage import Store
from pbx_control.storage.db import utcnow
from pbx_control.storage.tables import Binding


@pytest.fixture
def run(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    monkeypatch.setenv("PBX_CONTROL_DATABASE_URL", url)
    monkeypatch.delenv("PBX_CONTROL_CONFIG", raising=False)
    runner = CliRunner()

    def invoke(*args, ok=True):
        result = runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)
        output = result.output  # click 8.2+: stdout and stderr interleaved
        if ok:
            assert result.exit_code == 0, f"{args}: exit {result.exit_code}\n{output}"
        else:
            assert result.exit_code != 0, f"{args}: expected failure\n{output}"
        result.text = output
        return result

    invoke("db", "upgrade")
    invoke.url = url
    invoke.tmp = tmp_path
    return invoke


def as_json(result):
    return json.loads(result.output)


def test_db_upgrade_and_current_report_the_revision(run):
    assert run("db", "current").output.strip() == "0002"
    assert "0002" in run("db", "upgrade").output


def test_db_current_before_any_upgrade_says_none(tmp_path, monkeypatch):
    monkeypatch.setenv("PBX_CONTROL_DATABASE_URL", f"sqlite:///{tmp_path / 'new.sqlite'}")
    result = CliRunner().invoke(cli, ["db", "current"])
    assert (result.exit_code, result.output.strip()) == (0, "none"), result.output


COMMANDS = [
    ["db"], ["db", "upgrade"], ["db", "current"], ["numbers"], ["numbers", "add"],
    ["numbers", "list"], ["numbers", "show"], ["numbers", "retire"], ["numbers", "counts"],
    ["bind"], ["bind", "axb"], ["bind", "ax"], ["bind", "axn"], ["bind", "axg"], ["unbind"],
    ["bindings"], ["bindings", "list"], ["bindings", "show"], ["bindings", "update"],
    ["bindings", "sweep"],
    ["groups"], ["groups", "create"], ["groups", "add"], ["groups", "remove"],
    ["groups", "list"], ["softphones"], ["softphones", "add"], ["softphones", "remove"],
    ["softphones", "list"],
]


@pytest.mark.parametrize("words", COMMANDS, ids=" ".join)
def test_every_command_has_help(words):
    result = CliRunner().invoke(cli, words + ["--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_numbers_add_singles_ranges_and_list(run):
    out = run("numbers", "add", "13900000001", "13900000010-13900000012", "--city", "bj",
              "--carrier", "cm", "--cap", "voice").output
    assert "added 4" in out, out
    assert "already in the pool 1" in run("numbers", "add", "+8613900000001").output

    rows = as_json(run("numbers", "list", "--json", "--city", "bj"))
    assert [r["x"] for r in rows] == ["+8613900000001", "+8613900000010", "+8613900000011",
                                      "+8613900000012"]
    assert rows[0]["capabilities"] == ["voice"] and rows[0]["carrier"] == "cm"
    table = run("numbers", "list").output
    assert "+8613900000011" in table and "STATE" in table, table
    counts = as_json(run("numbers", "counts", "--json"))
    assert counts == [{"city": "bj", "count": 4, "state": "available"}]


def test_numbers_add_csv_imports_all_or_nothing(run):
    good = run.tmp / "good.csv"
    good.write_text("number,carrier,city,capabilities\n"
                    "13900000001,cm,bj,voice\n13900000002,,sh,\"voice,sms\"\n")
    assert "added 2" in run("numbers", "add", "--csv", good).output

    bad = run.tmp / "bad.csv"
    bad.write_text("number,carrier,city,capabilities\n13900000003,cm,bj,voice\n"
                   "13900000004,cm,bj,fax\n")
    result = run("numbers", "add", "--csv", bad, ok=False)
    assert "row 3" in result.text and len(result.text.strip().splitlines()) == 1, result.text
    bad.write_text("number\n13900000005\n13900000005999\n")
    result = run("numbers", "add", "--csv", bad, ok=False)
    assert "row 3" in result.text and "13900000005999" not in result.text, result.text

    bad.write_bytes(b"number\n\xff\xfe13900000006\n")
    result = run("numbers", "add", "--csv", bad, ok=False)
    assert "not a UTF-8 CSV" in result.text, result.text

    rows = as_json(run("numbers", "list", "--json"))
    assert [(r["x"], r["city"], r["capabilities"]) for r in rows] == [
        ("+8613900000001", "bj", ["voice"]), ("+8613900000002", "sh", ["voice", "sms"])]


def test_numbers_add_refuses_bad_input_with_one_line(run):
    for args in (["numbers", "add"], ["numbers", "add", "12"],
                 ["numbers", "add", "13900000001", "--cap", "fax"],
                 ["numbers", "add", "--csv", run.tmp / "missing.csv"],
                 ["numbers", "list", "--state", "sleeping"]):
        result = run(*args, ok=False)
        assert "Traceback" not in result.text, result.text
        assert result.text.strip(), args


def test_bind_axb_then_show_list_update_and_unbind(run):
    run("numbers", "add", "13900000001", "13900000002", "--city", "bj")
    binding = as_json(run("bind", "axb", "13800000001", "13800000002", "--city", "bj",
                          "--expires", "2h", "--out-id", "order-7", "--record", "--json"))
    assert (binding["a"], binding["b"], binding["record"]) == (
        "+8613800000001", "+8613800000002", True)
    assert binding["out_id"] == "order-7" and binding["expires_at"]

    again = as_json(run("bind", "axb", "13800000001", "13800000002", "--city", "bj",
                        "--expires", "2h", "--out-id", "order-7", "--record", "--json"))
    assert again["id"] == binding["id"]
    clash = run("bind", "axb", "13800000001", "13800000003", "--out-id", "order-7", ok=False)
    assert "out_id_conflict" in clash.text, clash.text

    shown = as_json(run("bindings", "show", binding["id"], "--json"))
    assert shown == binding
    listed = as_json(run("bindings", "list", "--party", "13800000002", "--json"))
    assert [b["id"] for b in listed] == [binding["id"]]
    assert binding["id"] in run("bindings", "list").output

    updated = as_json(run("bindings", "update", binding["id"], "--b", "13800000009",
                          "--expires", "never", "--json"))
    assert (updated["b"], updated["expires_at"]) == ("+8613800000009", None)

    number = as_json(run("numbers", "show", binding["x"], "--json"))
    assert [b["id"] for b in number["bindings"]] == [binding["id"]]
    assert "unbound" in run("unbind", binding["id"]).output
    again = run("unbind", binding["id"], ok=False)
    assert "already_ended" in again.text, again.text
    assert as_json(run("bindings", "list", "--json")) == []
    assert len(as_json(run("bindings", "list", "--all", "--json"))) == 1


def test_sweep_ends_only_expired_bindings(run):
    run("numbers", "add", "13900000001")
    run("bind", "axb", "13800000001", "13800000002", "--expires", "1h")
    assert "ended 0" in run("bindings", "sweep").output
    store = Store(run.url)
    with store.session() as session:
        session.execute(update(Binding).values(expires_at=utcnow() - timedelta(seconds=1)))
    store.dispose()
    assert "ended 1" in run("bindings", "sweep").output
    ended = as_json(run("bindings", "list", "--all", "--json"))
    assert [b["end_reason"] for b in ended] == ["expired"]


def test_bind_errors_are_one_line_and_masked(run):
    run("numbers", "add", "13900000001")
    cases = [
        (["bind", "axb", "13800000001", "1380000000199"], "1380000000199"),
        (["bind", "axb", "13800000001", "13800000001"], None),
        (["bind", "axb", "13800000001", "13900000001"], "13900000001"),
        (["bind", "axb", "13800000001", "13800000002", "--expires", "2026-01-01T00:00:00"],
         None),
        (["bind", "axb", "13800000001", "13800000002", "--expires", "soon"], None),
        (["bind", "axb", "13800000001", "13800000002", "--direction", "up"], None),
        (["bind", "axb", "13800000001", "13800000002", "--x", "13900000077"], "13900000077"),
        (["bind", "axg", "13800000001", "--group", "nope"], None),
        (["bind", "ax", "13800000001", "--softphone", "bad name;rm"], None),
        (["bindings", "show", "b-nope"], None),
        (["bindings", "update", "b-nope"], None),
    ]
    for args, secret in cases:
        result = run(*args, ok=False)
        assert "Traceback" not in result.text, result.text
        lines = [line for line in result.text.splitlines() if line.strip()]
        # One error line, after click's usage hint when the arguments themselves are bad.
        assert lines[-1].startswith("Error:") and len(lines) <= 3, result.text
        if secret:
            assert secret not in result.text, result.text
    assert as_json(run("bindings", "list", "--all", "--json")) == []


def test_pool_exhausted_is_reported(run):
    run("numbers", "add", "13900000001")
    run("bind", "ax", "13800000001")
    result = run("bind", "axn", "13800000002", ok=False)
    assert "pool_exhausted" in result.text, result.text


def test_groups_and_axg_binding(run):
    run("numbers", "add", "13900000001")
    assert "created" in run("groups", "create", "vip").output
    assert "2 added" in run("groups", "add", "vip", "13800000005", "13800000006").output
    assert "1 removed" in run("groups", "remove", "vip", "13800000006").output
    assert as_json(run("groups", "list", "--json")) == [
        {"name": "vip", "members": ["+8613800000005"]}]
    assert "group_exists" in run("groups", "create", "vip", ok=False).text

    binding = as_json(run("bind", "axg", "13800000001", "--group", "vip", "--default",
                          "13800000002", "--json"))
    assert (binding["group"], binding["default_party"]) == ("vip", "+8613800000002")
    assert "group_in_use" in run("groups", "delete", "vip", ok=False).text


def test_softphones_and_ax_binding(run):
    run("numbers", "add", "13900000001", "13900000002")
    assert "alice" in run("softphones", "add", "alice", "13800000001").output
    assert as_json(run("softphones", "list", "--json"))[0]["subscriber"] == "+8613800000001"

    binding = as_json(run("bind", "ax", "13800000001", "--softphone", "alice", "--primary",
                          "--allow-withheld", "--json"))
    assert (binding["softphone"], binding["primary"], binding["allow_withheld"]) == (
        "alice", True, True)
    assert "softphone_in_use" in run("softphones", "remove", "alice", ok=False).text
    run("unbind", binding["id"])
    assert "removed" in run("softphones", "remove", "alice").output
    assert "not_found" in run("softphones", "remove", "alice", ok=False).text


def test_numbers_retire_needs_force_while_in_use(run):
    run("numbers", "add", "13900000001")
    run("bind", "axb", "13800000001", "13800000002")
    assert "number_in_use" in run("numbers", "retire", "13900000001", ok=False).text
    assert "retired" in run("numbers", "retire", "13900000001", "--force").output
    assert as_json(run("numbers", "show", "13900000001", "--json"))["state"] == "retired"


def test_an_unknown_customer_is_not_created_by_using_it(run):
    result = run("--customer", "typo4", "numbers", "list", ok=False)
    assert "not_found: no customer named 'typo4'" in result.text, result.text
    assert "typo4" not in run("customers", "list").text


def test_customers_see_only_their_own_data(run):
    run("numbers", "add", "13900000001")
    run("customers", "add", "shop2")
    run("--customer", "shop2", "numbers", "add", "13900000002")
    assert [n["x"] for n in as_json(run("--customer", "shop2", "numbers", "list",
                                        "--json"))] == ["+8613900000002"]
    result = run("--customer", "shop2", "numbers", "show", "13900000001", ok=False)
    assert "not_found" in result.text, result.text


def test_a_disabled_customer_cannot_provision(run):
    run("numbers", "add", "13900000001")
    store = Store(run.url)
    with store.session() as session:
        set_customer_status(session, "default", "disabled")
    store.dispose()
    result = run("bind", "axb", "13800000001", "13800000002", ok=False)
    assert "customer_disabled" in result.text, result.text
    assert len(as_json(run("numbers", "list", "--json"))) == 1


# --- database and file errors are one line ------------------------------------------------


@pytest.mark.parametrize("url", ["garbage://", "mysql://x@y/z", ""])
@pytest.mark.parametrize("words", [["numbers", "list"], ["db", "upgrade"], ["db", "current"]])
def test_a_bad_database_url_is_one_line_naming_the_setting(monkeypatch, url, words):
    monkeypatch.setenv("PBX_CONTROL_DATABASE_URL", url)
    result = CliRunner().invoke(cli, words)
    assert result.exit_code == 1, result.output
    assert "database_url" in result.output and "Traceback" not in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_an_unmigrated_sqlite_database_says_to_upgrade(tmp_path, monkeypatch):
    monkeypatch.setenv("PBX_CONTROL_DATABASE_URL", f"sqlite:///{tmp_path / 'new.sqlite'}")
    result = CliRunner().invoke(cli, ["numbers", "list"])
    assert result.exit_code == 1, result.output
    assert result.output.strip() == ("Error: schema_missing: database schema missing or "
                                     "outdated: run 'pbx-control db upgrade'")


def test_an_unmigrated_postgresql_database_says_to_upgrade(empty_pg_url, monkeypatch):
    monkeypatch.setenv("PBX_CONTROL_DATABASE_URL", empty_pg_url)
    result = CliRunner().invoke(cli, ["numbers", "show", "13900000001"])
    assert result.exit_code == 1, result.output
    assert result.output.strip() == ("Error: schema_missing: database schema missing or "
                                     "outdated: run 'pbx-control db upgrade'")


def test_concurrent_upgrades_of_an_empty_postgresql_database_all_succeed(empty_pg_url):
    command = [sys.executable, "-c", "from pbx_control.cli.main import main; main()",
               "db", "upgrade"]
    env = dict(os.environ, PBX_CONTROL_DATABASE_URL=empty_pg_url)
    env.pop("PBX_CONTROL_CONFIG", None)
    runs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for _ in range(6)]
    outputs = [(run.wait(timeout=60), run.stdout.read()) for run in runs]
    for run in runs:
        run.stdout.close()
    assert [code for code, _ in outputs] == [0] * 6, outputs


def test_cdr_export_into_a_missing_directory_is_one_line_and_leaves_nothing(run):
    target = run.tmp / "missing" / "x.csv"
    result = run("cdr", "export", "--format", "csv", "--output", target, ok=False)
    assert result.text.strip().startswith("Error: output "), result.text
    assert len(result.text.strip().splitlines()) == 1, result.text
    assert not (run.tmp / "missing").exists()


# --- free-text options ----------------------------------------------------------------------


@pytest.mark.parametrize("args, option", [
    (["numbers", "add", "13900000001", "--city", "bei\njing"], "--city"),
    (["numbers", "add", "13900000001", "--carrier", "c\rm"], "--carrier"),
    (["numbers", "add", "13900000001", "--carrier", "cm\x1b[2J"], "--carrier"),
    (["numbers", "add", "13900000001", "--city", ""], "--city"),
    (["numbers", "add", "13900000001", "--carrier", ""], "--carrier"),
    (["blacklist", "add", "13800000009", "--reason", "a\nb"], "--reason"),
    (["bind", "axb", "13800000001", "13800000002", "--out-id", "o\n1"], "--out-id"),
    (["bind", "axb", "13800000001", "13800000002", "--expires", ""], "--expires"),
    (["bind", "axb", "13800000001", "13800000002", "--city", ""], "--city"),
    (["bind", "ax", "13800000001", "--softphone", ""], "--softphone"),
    (["bind", "axb", "13800000001", "13800000002", "--x", "13900000001", "--city", "bj"],
     "--city"),
    (["bind", "axb", "13800000001", "13800000002", "--any-city"], "--any-city"),
])
def test_bad_free_text_options_are_refused_naming_the_option(run, args, option):
    result = run(*args, ok=False)
    assert result.text.startswith(f"Error: invalid_input: {option}: "), result.text
    assert len(result.text.strip().splitlines()) == 1, result.text
    assert as_json(run("numbers", "list", "--json")) == []
    assert as_json(run("blacklist", "list", "--json")) == []


def test_control_characters_in_a_csv_cell_are_refused(run):
    path = run.tmp / "n.csv"
    path.write_text('number,carrier,city\n13900000001,cm,"bei\njing"\n')
    result = run("numbers", "add", "--csv", path, ok=False)
    assert "row" in result.text and "city" in result.text, result.text
    assert as_json(run("numbers", "list", "--json")) == []


def test_csv_and_numbers_together_are_refused(run):
    path = run.tmp / "n.csv"
    path.write_text("number\n13900000001\n")
    result = run("numbers", "add", "13900000002", "--csv", path, ok=False)
    assert "--csv" in result.text, result.text
    assert as_json(run("numbers", "list", "--json")) == []


def test_csv_options_fill_the_empty_cells(run):
    path = run.tmp / "n.csv"
    path.write_text("number,carrier,city\n13900000001,,\n13900000002,ct,sh\n")
    run("numbers", "add", "--csv", path, "--carrier", "cm", "--city", "bj", "--cap", "voice")
    rows = as_json(run("numbers", "list", "--json"))
    assert [(r["carrier"], r["city"], r["capabilities"]) for r in rows] == [
        ("cm", "bj", ["voice"]), ("ct", "sh", ["voice"])]


def test_an_error_names_its_code_once(run):
    run("numbers", "add", "13900000001")
    run("bind", "axb", "13800000001", "13800000002", "--x", "13900000001")
    result = run("bind", "axb", "13800000001", "13800000003", "--x", "13900000001", ok=False)
    assert result.text.startswith("Error: pair_in_use: a party"), result.text
    assert result.text.count("pair_in_use") == 1, result.text


@pytest.mark.parametrize("args", [
    ["numbers", "add", "1380000\n0001"], ["bindings", "show", "ab\ncd"],
    ["--customer", "ty\npo", "numbers", "list"], ["groups", "add", "g\n1", "13800000001"],
])
def test_input_with_a_line_break_gives_a_one_line_error(run, args):
    result = run(*args, ok=False)
    assert len(result.text.strip().splitlines()) == 1, result.text


def test_bindings_list_hides_expired_unswept_bindings_unless_all(run):
    run("numbers", "add", "13900000001", "13900000002")
    run("bind", "axb", "13800000001", "13800000002", "--x", "13900000001", "--expires", "1h")
    live = as_json(run("bind", "axb", "13800000003", "13800000004", "--x", "13900000002",
                       "--json"))
    store = Store(run.url)
    with store.session() as session:
        session.execute(update(Binding).where(Binding.id != live["id"])
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
    store.dispose()

    assert [(r["id"], r["active"], r["expired"])
            for r in as_json(run("bindings", "list", "--json"))] == [(live["id"], True, False)]
    everything = as_json(run("bindings", "list", "--all", "--json"))
    assert sorted((r["active"], r["expired"]) for r in everything) == [
        (False, True), (True, False)]


def test_numbers_list_says_when_it_stopped_at_its_limit_and_pages_on(run):
    run("numbers", "add", "13900000001-13900000005")
    first = run("numbers", "list", "--limit", "2")
    assert first.stderr.strip() == "more numbers: --after +8613900000002", first.text
    assert "+8613900000003" not in first.stdout

    rest = run("numbers", "list", "--limit", "3", "--after", "13900000002", "--json")
    assert [r["x"] for r in json.loads(rest.stdout)] == [
        "+8613900000003", "+8613900000004", "+8613900000005"]
    assert rest.stderr == "", rest.stderr
    missing = run("numbers", "list", "--after", "13900000009", ok=False)
    assert "not_found" in missing.text, missing.text


def test_the_sqlite_file_and_exports_are_readable_by_their_owner_only(run):
    database = run.tmp / "cli.sqlite"
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    run("numbers", "add", "13900000001")
    assert stat.S_IMODE(database.stat().st_mode) == 0o600

    target = run.tmp / "calls.csv"
    target.write_text("old export\n")
    target.chmod(0o644)
    run("cdr", "export", "--format", "csv", "--output", target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert "old export" not in target.read_text()


@pytest.mark.parametrize("name", ["", "  "])
def test_an_empty_customer_name_is_refused_not_taken_for_default(run, name):
    result = run("--customer", name, "numbers", "list", ok=False)
    assert result.exit_code == 2 and "empty customer name" in result.text
