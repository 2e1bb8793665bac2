"""``pbx-control serve asterisk`` refuses settings it cannot work with in one line, and says
in words why ARI cannot be reached: wrong credentials, nothing listening."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest

from pbx_control.asterisk.double import AriDouble
from pbx_control.asterisk.service import AsteriskController, Backoff
from pbx_control.config import Settings


@pytest.fixture
def env(tmp_path):
    return {"PBX_CONTROL_DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite'}",
            "PBX_CONTROL_ASTERISK_PASSWORD": "secret"}


def serve(env):
    """In a process of its own: a controller that wrongly starts runs until the timeout."""
    code = "from pbx_control.cli.main import main; main()"
    done = subprocess.run([sys.executable, "-c", code, "serve", "asterisk"], timeout=30,
                          env={**os.environ, **env}, capture_output=True, text=True)
    return SimpleNamespace(exit_code=done.returncode, output=done.stdout + done.stderr)


def test_an_empty_ari_password_is_refused_naming_its_variable(env):
    env["PBX_CONTROL_ASTERISK_PASSWORD"] = ""

    result = serve(env)

    assert result.exit_code == 1
    assert result.output == ("config: asterisk.password is empty: set "
                             "PBX_CONTROL_ASTERISK_PASSWORD (or ..._FILE)\n")


@pytest.mark.parametrize("url", ["127.0.0.1:8088", "ftp://127.0.0.1", "http://999.1.1.1:x"])
def test_an_ari_url_that_is_not_http_is_refused_naming_its_variable(env, url):
    env["PBX_CONTROL_ASTERISK_URL"] = url

    result = serve(env)

    assert result.exit_code == 1
    assert result.output.startswith(f"config: asterisk.url {url!r} is not an http(s) URL")
    assert "PBX_CONTROL_ASTERISK_URL" in result.output


def test_a_database_url_that_names_no_database_is_one_line_and_exit_1(env):
    env["PBX_CONTROL_DATABASE_URL"] = "postgresql://u:pw@[::1/x"

    result = serve(env)

    assert result.exit_code == 1
    assert result.output.startswith("config: database_url: cannot use the database")


def first_error(url: str, password: str) -> str:
    """The controller's error after its first failed connection to ``url``."""
    settings = Settings()
    settings.asterisk.url, settings.asterisk.password = url, password

    async def scenario():
        controller = AsteriskController(settings, calls=None, backoff=Backoff(5.0, 5.0))
        task = asyncio.create_task(controller.run())
        while controller.last_error is None:
            await asyncio.sleep(0.01)
        controller.stop()
        await task
        return controller.last_error

    return asyncio.run(asyncio.wait_for(scenario(), 20))


def test_wrong_ari_credentials_are_said_to_be_refused(caplog):
    async def start():
        double = AriDouble()
        await double.start()
        return double

    loop = asyncio.new_event_loop()
    double = loop.run_until_complete(start())
    try:
        with caplog.at_level(logging.WARNING):
            error = loop.run_in_executor(None, first_error, double.url, "wrong")
            error = loop.run_until_complete(error)
    finally:
        loop.run_until_complete(double.stop())
        loop.close()

    assert error == (f"ARI at {double.url} refused the credentials (HTTP 401): check "
                     "PBX_CONTROL_ASTERISK_USERNAME/PASSWORD and ari.conf")
    assert error in caplog.text


def test_nothing_listening_on_the_ari_port_is_a_refused_connection(caplog):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there

    with caplog.at_level(logging.WARNING):
        error = first_error(f"http://127.0.0.1:{port}", "secret")

    assert error == f"cannot connect to ARI at http://127.0.0.1:{port}: connection refused"
    assert "None" not in caplog.text
