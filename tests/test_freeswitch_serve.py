"""``pbx-control serve freeswitch`` refuses what it cannot serve with one line, never a
traceback: a port already taken, an address that is not one."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

from pbx_control.cli.main import cli


@pytest.fixture
def env(tmp_path):
    return {"PBX_CONTROL_DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite'}",
            "PBX_CONTROL_FREESWITCH_ESL_PASSWORD": "secret"}


def serve(env, *args):
    return CliRunner().invoke(cli, ["serve", "freeswitch", *args], env=env)


def test_a_port_in_use_is_one_line_and_exit_1(env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve(env, "--host", "127.0.0.1", "--port", str(port))

    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert result.output.strip() == (f"cannot listen on 127.0.0.1:{port}: "
                                     "Address already in use")


def test_a_host_that_is_not_an_address_is_one_line_and_exit_1(env):
    result = serve(env, "--host", "999.1.1.1", "--port", "0")

    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert result.output == ("cannot listen on 999.1.1.1:0: not an address, nor a host name "
                             "that resolves\n")


def test_a_database_url_that_names_no_database_is_one_line_and_exit_1(env):
    env["PBX_CONTROL_DATABASE_URL"] = "postgresql://u:pw@[::1/x"

    result = serve(env, "--host", "127.0.0.1", "--port", "0")

    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert result.output.startswith("config: database_url: cannot use the database")
    assert "pw" not in result.output
