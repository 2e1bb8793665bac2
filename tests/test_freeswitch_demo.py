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
