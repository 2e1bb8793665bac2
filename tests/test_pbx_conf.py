"""The committed PBX configuration keeps the contract with the controllers (notes: pbx_contract).

FreeSWITCH files are read as XML plus the few preprocessor rules FreeSWITCH applies before
its parser; Asterisk files with a small reader of Asterisk's INI dialect (repeated section
names, ``=>``, ``;`` comments, ``#include``). The script that writes Asterisk's secrets is
run for real in a temporary directory.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from pbx_control import config

REPO = Path(__file__).resolve().parents[1]
FS = REPO / "freeswitch-conf"
AST = REPO / "asterisk-conf"
DOCKER = REPO / "docker"

FS_BUILTINS = {"local_ip_v4", "local_ip_v6", "hostname", "base_dir", "conf_dir", "log_dir"}
VAR_REF = re.compile(r"\$\$\{([A-Za-z0-9_]+)\}")


# --- FreeSWITCH ------------------------------------------------------------------------------


def fs_root(rel: str) -> ET.Element:
    return ET.parse(FS / rel).getroot()


def preprocessor_lines() -> list[tuple[str, str, str]]:
    """(cmd, variable, command or value) of every preprocessor line of vars.xml, in order."""
    lines = []
    for node in fs_root("vars.xml").iter("X-PRE-PROCESS"):
        name, _, value = node.get("data").partition("=")
        lines.append((node.get("cmd"), name.strip(), value.strip()))
    return lines


def default_of(name: str) -> str:
    """The value a variable has when the environment sets nothing (literal ``set`` lines)."""
    value = None
    for cmd, var, data in preprocessor_lines():
        if cmd == "set" and var == name:
            value = VAR_REF.sub(lambda m: default_of(m.group(1)), data)
    if value is None and name in FS_BUILTINS:
        return f"<{name}>"
    assert value is not None, f"$${{{name}}} has no default in vars.xml"
    return value


def resolve(text: str) -> str:
    return VAR_REF.sub(lambda m: default_of(m.group(1)), text)


def defined_variables() -> set[str]:
    return {var for _, var, _ in preprocessor_lines()} | FS_BUILTINS


def env_sources(name: str) -> list[str]:
    """What exec-set lines feed a variable, in order: 'random' or the environment variable."""
    sources = []
    for cmd, var, data in preprocessor_lines():
        if cmd == "exec-set" and var == name:
            read = re.fullmatch(r"printenv ([A-Z0-9_]+) \| tr -d '\\n'", data)
            sources.append(read.group(1) if read else "random" if "/dev/urandom" in data else data)
    return sources


def params(element: ET.Element) -> dict[str, str]:
    return {p.get("name"): p.get("value") for p in element.iter("param")}


def acl_list(name: str) -> ET.Element:
    lists = fs_root("autoload_configs/acl.conf.xml").iter("list")
    return next(item for item in lists if item.get("name") == name)


def assert_secret_from_env(variable: str, env_name: str) -> None:
    assert not [line for line in preprocessor_lines() if line[:2] == ("set", variable)]
    assert env_sources(variable) == ["random", env_name]


def test_freeswitch_files_are_xml_that_survives_the_preprocessor():
    for path in FS.rglob("*.xml"):
        ET.parse(path)
        for number, line in enumerate(path.read_text().splitlines(), 1):
            where = f"{path.relative_to(REPO)}:{number}"
            # FreeSWITCH drops a line naming the tag unless it opens it, even in a comment.
            for hit in re.finditer("x-pre-process", line, re.IGNORECASE):
                assert line[hit.start() - 1] == "<", where
            if "<include>" in line or "</include>" in line:
                assert line.strip() in ("<include>", "</include>"), where
            assert "<!--#" not in line, where
            assert set(VAR_REF.findall(line)) <= defined_variables(), where


def test_event_socket_listens_on_loopback_behind_a_deny_by_default_acl():
    settings = config.FreeSwitchSettings()
    socket = params(fs_root("autoload_configs/event_socket.conf.xml"))

    assert resolve(socket["listen-ip"]) == settings.esl_host == "127.0.0.1"
    assert socket["listen-port"] == str(settings.esl_port)
    acl = acl_list(socket["apply-inbound-acl"])
    assert acl.get("default") == "deny"
    assert [resolve(node.get("cidr")) for node in acl.iter("node")] == ["127.0.0.1/32"]


def test_event_socket_password_comes_from_the_environment_the_controller_reads():
    env_name = f"{config.ENV_PREFIX}FREESWITCH_ESL_PASSWORD"
    socket = params(fs_root("autoload_configs/event_socket.conf.xml"))

    assert socket["password"] == "$${pbx_control_esl_password}"
    assert_secret_from_env("pbx_control_esl_password", env_name)
    assert config.load(environ={env_name: "s3cret"}).freeswitch.esl_password == "s3cret"


@pytest.mark.parametrize("entry", ["carrier", "softphone"])
def test_dialplan_hands_every_call_to_the_controller_then_fails_closed(entry):
    settings = config.FreeSwitchSettings()
    context = fs_root(f"dialplan/from-{entry}.xml").find("context")
    condition = context.find("extension/condition")
    actions = [(a.get("application"), a.get("data")) for a in condition.iter("action")]

    assert context.get("name") == f"from-{entry}"
    for number in ("8617000000001", "+8617000000001", "unknown"):
        assert re.search(condition.get("expression"), number)
    assert actions[0] == ("set", f"pbx_control_entry={entry}")
    assert actions[1] == ("socket", f"{settings.listen_host}:{settings.listen_port} async")
    assert "full" not in actions[1][1].split()
    assert actions[2:] == [("hangup", "NORMAL_TEMPORARY_FAILURE")]


def test_carrier_profile_takes_unauthenticated_calls_from_the_carrier_only():
    settings = config.FreeSwitchSettings()
    profile = fs_root("sip_profiles/carrier.xml").find("profile")
    values = params(profile.find("settings"))
    gateway = profile.find("gateways/gateway")

    assert profile.get("name") == settings.carrier_profile
    assert values["context"] == "from-carrier"
    assert values["auth-calls"] == values["auth-messages"] == "false"
    assert values["disable-register"] == "true"
    assert acl_list(values["apply-inbound-acl"]).get("default") == "deny"
    assert gateway.get("name") == settings.gateways["default"]
    assert params(gateway)["caller-id-in-from"] == "true"
    assert params(gateway)["register"] == "false"


def test_softphone_profile_challenges_every_call():
    profile = fs_root("sip_profiles/softphone.xml").find("profile")
    values = params(profile.find("settings"))

    assert profile.get("name") == config.FreeSwitchSettings().softphone_profile
    assert values["context"] == "from-softphone"
    assert values["auth-calls"] == "true"
    assert values["accept-blind-reg"] == values["accept-blind-auth"] == "false"


def test_directory_has_two_softphones_with_passwords_from_the_environment():
    domain = fs_root("directory/pbx-control.xml").find("domain")
    users = {user.get("id"): params(user) for user in domain.iter("user")}

    assert domain.get("name") == "$${domain}"
    assert sorted(users) == ["1001", "1002"]
    for user, values in users.items():
        variable = f"pbx_control_softphone_{user}_password"
        assert values["password"] == f"$${{{variable}}}"
        assert_secret_from_env(variable, f"{config.ENV_PREFIX}SOFTPHONE_{user}_PASSWORD")
    names = [node.get("name", "") for path in FS.glob("directory/*.xml")
             for node in ET.parse(path).iter()]
    assert not [name for name in names if name.startswith("effective_caller_id")]


def test_freeswitch_loads_the_modules_the_controller_uses():
    loaded = {m.get("module") for m in fs_root("autoload_configs/modules.conf.xml").iter("load")}
    needed = {"mod_event_socket", "mod_sofia", "mod_dptools", "mod_commands", "mod_dialplan_xml"}
    assert needed <= loaded


def test_chatplan_never_lets_freeswitch_relay_a_message():
    contexts = {c.get("name"): c for c in fs_root("chatplan/pbx-control.xml").iter("context")}
    assert set(contexts) == {"from-carrier", "from-softphone"}
    for context in contexts.values():
        assert [a.get("application") for a in context.iter("action")][-1] == "final"


# --- Asterisk --------------------------------------------------------------------------------


Section = tuple[str, list[tuple[str, str]]]


def read_conf(path: Path) -> tuple[list[Section], list[str]]:
    """Sections with their (key, value) lines in file order (names repeat: an endpoint, its
    aor and its identify share one) and the files named by #include / #tryinclude."""
    sections: list[Section] = []
    includes = []
    for raw in path.read_text().splitlines():
        line = re.sub(r"(?<!\\);.*", "", raw).strip()
        if include := re.fullmatch(r'#(?:try)?include\s+"?([^"]+)"?', line):
            includes.append(include.group(1))
        elif header := re.fullmatch(r"\[([^\]]+)\](\(.*\))?", line):
            sections.append((header.group(1), []))
        elif line:
            key, _, value = re.split(r"\s*(=>?)\s*", line, maxsplit=1)
            sections[-1][1].append((key, value))
    return sections, includes


def as_dict(lines: list[tuple[str, str]]) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for key, value in lines:
        values.setdefault(key, []).append(value)
    return values


def of_type(path: Path, kind: str) -> dict[str, dict[str, list[str]]]:
    sections = [(name, as_dict(lines)) for name, lines in read_conf(path)[0]]
    return {name: body for name, body in sections if body.get("type") == [kind]}


def test_every_pjsip_endpoint_keeps_the_other_party_out_of_connected_line_updates():
    endpoints = of_type(AST / "pjsip.conf", "endpoint")

    assert endpoints
    for name, body in endpoints.items():
        assert body.get("send_connected_line") == ["no"], name
        assert body.get("direct_media") == ["no"], name
        assert "callerid" not in body, name


def test_carrier_trunk_sends_and_trusts_carrier_identity():
    settings = config.AsteriskSettings()
    endpoints = of_type(AST / "pjsip.conf", "endpoint")
    identify = of_type(AST / "pjsip.conf", "identify")
    aors = of_type(AST / "pjsip.conf", "aor")

    for trunk in set(settings.carrier_endpoints) | set(settings.trunks.values()):
        body = endpoints[trunk]
        assert body["context"] == ["from-carrier"]
        for option in ("send_pai", "send_rpid", "trust_id_inbound", "trust_id_outbound"):
            assert body.get(option) == ["yes"], option
        assert identify[trunk]["endpoint"] == [trunk] and identify[trunk]["match"]
        assert aors[trunk]["contact"]


def test_only_the_carrier_and_authenticated_softphones_are_endpoints():
    _, includes = read_conf(AST / "pjsip.conf")
    endpoints = of_type(AST / "pjsip.conf", "endpoint")
    order = of_type(AST / "pjsip.conf", "global")["global"]["endpoint_identifier_order"]

    assert "anonymous" not in endpoints and "anonymous" not in order[0]
    assert not of_type(AST / "pjsip.conf", "auth")
    assert "pjsip_softphone_auth.conf" in includes
    for user in ("1001", "1002"):
        assert endpoints[user]["context"] == ["from-softphone"]
        assert endpoints[user]["auth"] == [f"{user}-auth"]
        assert endpoints[user].get("trust_id_inbound") == ["no"]


def test_ari_is_served_on_loopback_and_its_users_come_from_a_generated_file():
    url = urlparse(config.AsteriskSettings().url)
    http = as_dict(dict(read_conf(AST / "http.conf")[0])["general"])
    ari_sections, ari_includes = read_conf(AST / "ari.conf")

    assert http["enabled"] == ["yes"] and "tlsenable" not in http
    assert http["bindaddr"] == [url.hostname] == ["127.0.0.1"]
    assert http["bindport"] == [str(url.port)]
    assert [name for name, _ in ari_sections] == ["general"]
    assert as_dict(ari_sections[0][1])["enabled"] == ["yes"]
    assert ari_includes == ["ari_users.conf"]


def dialplan(path: Path) -> dict[tuple[str, str], list[str]]:
    """(context, pattern) -> the applications of its priorities, in order."""
    steps: dict[tuple[str, str], list[str]] = {}
    for context, lines in read_conf(path)[0]:
        pattern = None
        for key, value in lines:
            if key in ("exten", "same"):
                parts = value.split(",", 2)
                pattern = parts[0] if key == "exten" else pattern
                steps.setdefault((context, pattern), []).append(parts[-1])
    return steps


@pytest.mark.parametrize("entry", ["carrier", "softphone"])
def test_asterisk_dialplan_enters_the_stasis_app_then_refuses_with_503(entry):
    app = config.AsteriskSettings().app
    steps = dialplan(AST / "extensions.conf")

    for pattern in ("_X.", "_+X."):
        # Hangup(34) is sent as 503 by chan_pjsip; Hangup(41) would be 603 (no mapping).
        assert steps[(f"from-{entry}", pattern)] == [f"Stasis({app},{entry})", "Hangup(34)"]


def run_writer(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PBX_CONTROL_")}
    return subprocess.run(
        ["sh", str(AST / "write-ari-users.sh"), str(tmp_path)],
        env={**clean, **env}, capture_output=True, text=True, timeout=30,
    )


def test_write_ari_users_writes_private_files_from_the_environment(tmp_path):
    done = run_writer(
        tmp_path, PBX_CONTROL_ASTERISK_PASSWORD="ari-Secret-123",
        PBX_CONTROL_SOFTPHONE_1001_PASSWORD="phone-1001-secret",
    )
    users = [(name, as_dict(lines)) for name, lines in read_conf(tmp_path / "ari_users.conf")[0]]
    auths = of_type(tmp_path / "pjsip_softphone_auth.conf", "auth")

    assert done.returncode == 0, done.stderr
    for name in ("ari_users.conf", "pjsip_softphone_auth.conf"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert users == [(config.AsteriskSettings().username, {
        "type": ["user"], "read_only": ["no"], "password_format": ["plain"],
        "password": ["ari-Secret-123"]})]
    assert auths["1001-auth"]["password"] == ["phone-1001-secret"]
    assert re.fullmatch(r"[0-9a-f]{64}", auths["1002-auth"]["password"][0])
    assert "ari-Secret-123" not in done.stderr


@pytest.mark.parametrize("password", ["", "short", "semi;colon-secret", "line\n[break]-secret"])
def test_write_ari_users_refuses_a_bad_password_and_writes_nothing(tmp_path, password):
    done = run_writer(tmp_path, PBX_CONTROL_ASTERISK_PASSWORD=password)

    assert done.returncode != 0
    assert "PBX_CONTROL_ASTERISK_PASSWORD" in done.stderr
    assert list(tmp_path.iterdir()) == []


# --- committed secrets and docker ------------------------------------------------------------


def committed_files() -> list[Path]:
    """The files git tracks (plus new ones), not a local docker/.env or generated secrets."""
    dirs = [str(d.relative_to(REPO)) for d in (FS, AST, DOCKER)]
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *dirs],
        cwd=REPO, capture_output=True, text=True,
    )
    if listed.returncode == 0 and listed.stdout.strip():
        return [REPO / name for name in listed.stdout.split() if (REPO / name).is_file()]
    return [p for d in (FS, AST, DOCKER) for p in d.rglob("*") if p.name != ".env"]


def test_no_password_is_committed():
    for path in committed_files():
        text = path.read_text()
        for value in re.findall(r'name="[^"]*password[^"]*"\s+value="([^"]*)"', text):
            assert VAR_REF.fullmatch(value), path
        for line in text.splitlines():
            line = re.sub(r"(?<!\\)[;#].*", "", line) if path.suffix != ".xml" else ""
            if assignment := re.match(r"\s*([\w.-]*password)\s*[=:]\s*(\S*)", line, re.I):
                value = assignment.group(2)
                assert value in ("", "...") or value.startswith(("${", "$", '"${')), path


def test_compose_runs_each_softswitch_beside_its_controller_on_the_host_network():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]

    for kind in ("freeswitch", "asterisk"):
        assert services[kind]["profiles"] == services[f"controller-{kind}"]["profiles"] == [kind]
        assert services[f"controller-{kind}"]["command"] == ["serve", kind]
        for name in (kind, f"controller-{kind}"):
            assert services[name]["network_mode"] == "host"
    assert services["api"]["command"] == ["serve", "api"]
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["freeswitch"]["image"].startswith("${FREESWITCH_IMAGE")
    assert "../freeswitch-conf:/etc/freeswitch:ro" in services["freeswitch"]["volumes"]
    for service in services.values():
        for volume in service.get("volumes", []):
            if volume.startswith("../"):
                assert (DOCKER / volume.split(":")[0]).exists(), volume


def test_env_example_documents_every_variable_and_holds_no_secret():
    compose = (DOCKER / "compose.yaml").read_text()
    example = dict(
        line.split("=", 1) for line in (DOCKER / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )

    assert set(re.findall(r"\$\{([A-Z0-9_]+)", compose)) <= set(example)
    assert all(value == "" for key, value in example.items() if "PASSWORD" in key)


def test_image_installs_the_package_and_runs_as_an_unprivileged_user():
    dockerfile = (DOCKER / "Dockerfile").read_text()

    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    assert "pip install ." in dockerfile
    assert re.search(r"^USER (?!root\b)\S+$", dockerfile, re.M)
    assert 'ENTRYPOINT ["pbx-control-entrypoint"]' in dockerfile


def run_entrypoint(tmp_path: Path, *args: str, **env: str) -> list[str]:
    """Runs docker/entrypoint.sh with a stand-in pbx-control that logs its arguments."""
    log = tmp_path / "calls"
    fake = tmp_path / "pbx-control"
    fake.write_text(
        f'#!/bin/sh\necho "$*" >> {log}\n[ "$*" != "db upgrade" ] || exit "${{FAIL:-0}}"\n'
    )
    fake.chmod(0o755)
    path = f"{tmp_path}{os.pathsep}{os.environ['PATH']}"
    subprocess.run(["sh", str(DOCKER / "entrypoint.sh"), *args], env={**os.environ, **env,
                   "PATH": path}, capture_output=True, timeout=30)
    return log.read_text().splitlines() if log.exists() else []


def test_entrypoint_upgrades_the_schema_before_serving(tmp_path):
    assert run_entrypoint(tmp_path, "serve", "freeswitch") == ["db upgrade", "serve freeswitch"]


def test_entrypoint_serves_nothing_when_the_upgrade_fails(tmp_path):
    assert run_entrypoint(tmp_path, "serve", "api", FAIL="3") == ["db upgrade"]


def test_entrypoint_passes_other_commands_and_opted_out_servers_through(tmp_path):
    assert run_entrypoint(tmp_path, "numbers", "list") == ["numbers list"]
    assert run_entrypoint(tmp_path, "serve", "api", PBX_CONTROL_DB_UPGRADE="0") == [
        "numbers list", "serve api"]
