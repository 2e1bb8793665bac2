"""``pbx-control customers`` and ``keys`` through CliRunner, and the keys they print used
against the API on a real server (SQLite file shared by both)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest
from api_support import LiveServer, wait_for
from click.testing import CliRunner

from pbx_control.api.app import create_app
from pbx_control.cli.main import cli
from pbx_control.config import Settings
from pbx_control.storage import Store


@pytest.fixture
def run(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    monkeypatch.setenv("PBX_CONTROL_DATABASE_URL", url)
    monkeypatch.delenv("PBX_CONTROL_CONFIG", raising=False)

    def invoke(*args, ok=True):
        result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
        assert (result.exit_code == 0) == ok, f"{args}: exit {result.exit_code}\n{result.output}"
        return result

    invoke("db", "upgrade")
    invoke.url = url
    return invoke


@pytest.fixture
def api(run):
    store = Store(run.url)
    with LiveServer(create_app(store, Settings())) as server:
        yield server
    store.dispose()


def test_customers_are_added_listed_and_shown(run):
    run("customers", "add", "acme")
    run("customers", "add", "globex")
    assert "customer_exists" in run("customers", "add", "acme", ok=False).output
    assert "invalid_input" in run("customers", "add", "bad name!", ok=False).output

    listed = json.loads(run("customers", "list", "--json").stdout)
    assert [(c["name"], c["status"], c["webhook"]) for c in listed] == [
        ("acme", "active", False), ("globex", "active", False)]
    assert "acme" in run("customers", "list").stdout
    assert json.loads(run("customers", "show", "acme", "--json").stdout)["keys"] == []


def test_customers_show_lists_its_keys_with_their_customer_as_json_or_text(run):
    run("customers", "add", "acme")
    key = run("keys", "create", "--customer", "acme", "--label", "backend").stdout.strip()

    shown = json.loads(run("customers", "show", "acme", "--json").stdout)
    text = run("customers", "show", "acme").stdout

    assert [(k["prefix"], k["customer"], k["label"]) for k in shown["keys"]] == [
        (key[:12], "acme", "backend")]
    assert "name: acme" in text and "webhook_url: -" in text
    assert key[:12] in text and "backend" in text and key not in text + str(shown)


def test_a_created_key_is_printed_once_and_works_until_revoked(run, api):
    run("customers", "add", "acme")
    key = run("keys", "create", "--customer", "acme", "--label", "backend").stdout.strip()
    prefix = key[:12]

    listed = run("keys", "list", "--json").stdout
    assert prefix in listed and key not in listed
    with api.client(key) as client:
        assert client.get("/v1/numbers").status_code == 200
        run("keys", "revoke", prefix)
        assert client.get("/v1/numbers").json()["code"] == "key_revoked"
    assert json.loads(run("keys", "list", "--json").stdout)[0]["active"] is False
    assert "not_found" in run("keys", "revoke", "pbx_ffffffff", ok=False).output


def test_a_disabled_customer_is_refused_and_can_be_enabled_again(run, api):
    run("customers", "add", "acme")
    key = run("keys", "create", "--customer", "acme").stdout.strip()

    run("customers", "disable", "acme")
    with api.client(key) as client:
        assert client.get("/v1/numbers").json()["code"] == "customer_disabled"
        assert "customer_disabled" in run("keys", "create", "--customer", "acme",
                                          ok=False).output
        run("customers", "enable", "acme")
        assert client.get("/v1/numbers").status_code == 200


def test_webhook_set_checks_the_url_and_shows_the_secret_once(run, monkeypatch):
    run("customers", "add", "acme")
    assert "webhook_refused" in run("customers", "webhook", "set", "acme",
                                    "http://127.0.0.1:9/hook", ok=False).output
    assert "webhook_refused" in run("customers", "webhook", "set", "acme",
                                    "https://127.0.0.1:9/hook", ok=False).output

    monkeypatch.setenv("PBX_CONTROL_API_WEBHOOK_ALLOW_HTTP", "true")
    monkeypatch.setenv("PBX_CONTROL_API_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8")
    first = run("customers", "webhook", "set", "acme", "http://127.0.0.1:9/hook").stdout
    again = run("customers", "webhook", "set", "acme", "http://127.0.0.1:9/other").stdout
    assert "whsec_" in first and "whsec_" not in again

    shown = json.loads(run("customers", "show", "acme", "--json").stdout)
    assert shown["webhook_url"] == "http://127.0.0.1:9/other" and "whsec_" not in str(shown)
    run("customers", "webhook", "clear", "acme")
    assert json.loads(run("customers", "show", "acme", "--json").stdout)["webhook_url"] is None


def test_serve_api_answers_health_and_stops_on_sigterm(run, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, PBX_CONTROL_DATABASE_URL=run.url)
    process = subprocess.Popen(
        [sys.executable, "-c", "from pbx_control.cli.main import main; main()",
         "--log-level", "INFO", "serve", "api", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def healthy():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json()
            except httpx.HTTPError:
                assert process.poll() is None, process.stdout.read().decode()
                return None

        assert wait_for(healthy, 30, "the API to answer") == {"status": "ok", "database": "ok"}
    finally:
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert process.wait(20) in (0, -signal.SIGTERM)
    log = process.stdout.read().decode()
    assert "webhook pusher started" in log and "webhook pusher stopped" in log, log
