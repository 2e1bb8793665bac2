"""``pbx-control demo``: the four recorded calls decided and recorded, exit 0."""

from __future__ import annotations

from click.testing import CliRunner

from pbx_control.cli.main import cli


def test_demo_plays_four_recorded_calls_and_prints_each_decision_and_record():
    result = CliRunner().invoke(cli, ["demo"])

    assert result.exit_code == 0, result.output
    assert result.output.count("call record ") == 4
    assert "decision: connect (a_to_b)" in result.output
    assert "decision: connect (b_to_a)" in result.output
    assert "decision: refuse (no_binding)" in result.output
    assert "outcome=busy" in result.output and "SIP 486" in result.output
    assert "8613900000000" not in result.output  # numbers are masked


def test_demo_on_a_given_database_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'demo.sqlite'}"
    result = CliRunner().invoke(cli, ["demo", "--database", url])

    assert result.exit_code == 0, result.output
    assert (tmp_path / "demo.sqlite").exists()


def test_demo_on_a_database_it_cannot_open_is_one_line_and_exit_1():
    result = CliRunner().invoke(cli, ["demo", "--database", "sqlite:////nonexistent/x.sqlite"])

    assert result.exit_code == 1
    assert result.output == ("Error: cannot use the database sqlite:////nonexistent/x.sqlite: "
                             "unable to open database file\n")


def test_demo_on_an_unreachable_server_is_one_line_without_the_password():
    url = "postgresql://postgres:pw-123@127.0.0.1:1/x"
    result = CliRunner().invoke(cli, ["demo", "--database", url])

    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot use the database "
                                    "postgresql://postgres:***@127.0.0.1:1/x: ")
    assert "pw-123" not in result.output and len(result.output.splitlines()) == 1
