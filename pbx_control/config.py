"""Settings in layers: typed defaults, then a TOML file, then the environment.

The file is named by ``PBX_CONTROL_CONFIG`` (or ``--config`` on the command line). Every
scalar setting can also be given as ``PBX_CONTROL_<SECTION>_<NAME>`` (top-level ones as
``PBX_CONTROL_<NAME>``). Secrets (the event-socket password, the ARI password, the webhook
signing key) are read from the environment or from a file named by ``..._FILE``, never from
the committed TOML.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "PBX_CONTROL_"
DEFAULT_DATABASE_URL = "sqlite:///pbx-control.sqlite"


class ConfigError(ValueError):
    """A configuration value is missing or malformed."""


@dataclass
class RoutingSettings:
    max_axb_per_number: int = 200
    pair_cooldown_s: int = 3600
    dedicated_cooldown_s: int = 30 * 24 * 3600
    rate_limit_attempts: int = 5
    rate_limit_window_s: int = 60
    # Outbound AX targets must match one of these regular expressions (over E.164). The
    # default admits Chinese mobile and fixed-line numbers only, so a subscriber cannot dial
    # premium or international numbers through X.
    outbound_patterns: list[str] = field(default_factory=lambda: [r"^\+86[1-9]\d{9,10}$"])
    emergency_codes: list[str] = field(default_factory=lambda: ["110", "119", "120", "122"])
    # "own_number": emergency calls go out with the subscriber's own number so that the
    # service can call back; "refuse": refused with reason ``emergency``.
    emergency_policy: str = "own_number"


@dataclass
class FreeSwitchSettings:
    listen_host: str = "127.0.0.1"
    listen_port: int = 8084
    # Source addresses allowed to open an outbound event-socket session.
    pbx_addresses: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    # The inbound connection used for call ends after the outbound socket has closed,
    # and for reconciliation at start.
    esl_host: str = "127.0.0.1"
    esl_port: int = 8021
    esl_password: str = ""
    node_name: str = "freeswitch"
    # SIP profile names and the addresses that count as carrier trunks on the carrier profile.
    carrier_profile: str = "carrier"
    softphone_profile: str = "softphone"
    carrier_addresses: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    # Dial strings per destination kind; {number} is E.164 digits without '+', {gateway}
    # the carrier's gateway, {user} a directory user.
    external_dial: str = "sofia/gateway/{gateway}/{number}"
    softphone_dial: str = "user/{user}@${{domain_name}}"
    # carrier name -> gateway name; the far leg leaves through the gateway of X's carrier.
    gateways: dict[str, str] = field(default_factory=lambda: {"default": "carrier"})
    ring_timeout_s: int = 20
    refuse_announcement: str = ""
    recordings_dir: str = "/var/lib/freeswitch/recordings"
    max_call_s: int = 7200
    decision_deadline_s: float = 1.0
    # Admission control: past either bound a new session is refused 503 at once (the
    # carrier fails over) instead of slowing every call down and growing without bound.
    max_sessions: int = 2000  # sessions open at once, answered calls included
    # 40: about 0.3 s of decisions queued at the measured CPU per call (docs/benchmarks.md)
    max_setup_sessions: int = 40  # sessions accepted and not yet decided


@dataclass
class AsteriskSettings:
    url: str = "http://127.0.0.1:8088"
    username: str = "pbx-control"
    password: str = ""
    app: str = "pbx-control"
    node_name: str = "asterisk"
    carrier_endpoints: list[str] = field(default_factory=lambda: ["carrier"])
    # carrier name -> PJSIP trunk endpoint used for the far leg.
    trunks: dict[str, str] = field(default_factory=lambda: {"default": "carrier"})
    ring_timeout_s: int = 20
    refuse_announcement: str = ""
    recordings_dir: str = ""
    max_call_s: int = 7200
    decision_deadline_s: float = 1.0


@dataclass
class ApiSettings:
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    rate_limit_per_s: float = 50.0
    rate_limit_burst: int = 100
    webhook_allow_http: bool = False
    # Networks (CIDR) a webhook may resolve to although private or loopback.
    webhook_allow_networks: list[str] = field(default_factory=list)


@dataclass
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    default_region: str = "CN"
    default_customer: str = "default"
    cdr_retention_days: int = 180
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    freeswitch: FreeSwitchSettings = field(default_factory=FreeSwitchSettings)
    asterisk: AsteriskSettings = field(default_factory=AsteriskSettings)
    api: ApiSettings = field(default_factory=ApiSettings)


SECRETS = {("freeswitch", "esl_password"), ("asterisk", "password")}
EMERGENCY_POLICIES = ("own_number", "refuse")


def load(path: str | os.PathLike | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Build settings from defaults, the TOML file (if any) and the environment."""
    environ = dict(os.environ if environ is None else environ)
    settings = Settings()

    path = path or environ.get(ENV_PREFIX + "CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        _apply_mapping(settings, data, where=str(path))

    _apply_environment(settings, environ)
    validate(settings)
    return settings


def _apply_mapping(target: Any, data: dict[str, Any], where: str,
                   section: str | None = None) -> None:
    fields = {f.name: f for f in dataclasses.fields(target)}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown setting {key!r}")
        if (section, key) in SECRETS:
            env = f"{ENV_PREFIX}{section}_{key}".upper()
            raise ConfigError(f"{where}: {section}.{key} is a secret: give it in the "
                              f"environment ({env}) or in a file named by {env}_FILE, "
                              "not in the config file")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: [{key}] must be a table")
            _apply_mapping(current, value, f"{where} [{key}]", section=key)
        else:
            setattr(target, key, _coerce(value, current, f"{where}: {key}"))


def _apply_environment(settings: Settings, environ: dict[str, str]) -> None:
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value):
            for sub in dataclasses.fields(value):
                name = f"{ENV_PREFIX}{f.name}_{sub.name}".upper()
                raw = _env_value(environ, name)
                if raw is not None:
                    current = getattr(value, sub.name)
                    setattr(value, sub.name, _coerce_text(raw, current, name))
        else:
            name = f"{ENV_PREFIX}{f.name}".upper()
            raw = _env_value(environ, name)
            if raw is not None:
                setattr(settings, f.name, _coerce_text(raw, value, name))


def _env_value(environ: dict[str, str], name: str) -> str | None:
    if name in environ:
        return environ[name]
    file_name = environ.get(name + "_FILE")
    if file_name:
        try:
            return Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE: cannot read {file_name}: {exc}") from exc
    return None


def _coerce(value: Any, current: Any, where: str) -> Any:
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false")
        return value
    if isinstance(current, (int, float)) and not isinstance(current, bool):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number")
        return type(current)(value)
    if isinstance(current, list):
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list")
        return [str(v) for v in value]
    if isinstance(current, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table")
        return {str(k): str(v) for k, v in value.items()}
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string")
    return value


def _coerce_text(raw: str, current: Any, where: str) -> Any:
    """Environment values are text: lists are comma-separated, tables are k=v pairs."""
    if isinstance(current, bool):
        if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ConfigError(f"{where} must be true or false")
        return raw.lower() in ("1", "true", "yes")
    if isinstance(current, (int, float)):
        try:
            return type(current)(raw)
        except ValueError as exc:
            raise ConfigError(f"{where} must be a number, not {raw!r}") from exc
    if isinstance(current, list):
        return [part.strip() for part in raw.split(",") if part.strip()]
    if isinstance(current, dict):
        pairs = [part.split("=", 1) for part in raw.split(",") if part.strip()]
        if any(len(p) != 2 for p in pairs):
            raise ConfigError(f"{where} must be name=value pairs separated by commas")
        return {k.strip(): v.strip() for k, v in pairs}
    return raw


# --- validation ---------------------------------------------------------------------------


def validate(settings: Settings) -> Settings:
    """Refuse values that would only fail later, in a call (ConfigError names the setting)."""
    _at_least(settings, "cdr_retention_days", 1)
    _validate_routing(settings.routing)
    _validate_freeswitch(settings.freeswitch)
    _validate_asterisk(settings.asterisk)
    _validate_api(settings.api)
    return settings


def _validate_routing(routing: RoutingSettings) -> None:
    for name, low in (("rate_limit_attempts", 1), ("rate_limit_window_s", 1),
                      ("max_axb_per_number", 1), ("pair_cooldown_s", 0),
                      ("dedicated_cooldown_s", 0)):
        _at_least(routing, name, low, "routing.")
    for pattern in routing.outbound_patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"routing.outbound_patterns: {pattern!r}: {exc}") from None
    if routing.emergency_policy not in EMERGENCY_POLICIES:
        raise ConfigError(f"routing.emergency_policy: one of {', '.join(EMERGENCY_POLICIES)}, "
                          f"not {routing.emergency_policy!r}")


def _validate_freeswitch(fs: FreeSwitchSettings) -> None:
    _port(fs, "listen_port", "freeswitch.")
    _port(fs, "esl_port", "freeswitch.")
    _call_limits(fs, "freeswitch.")
    _at_least(fs, "max_sessions", 1, "freeswitch.")
    _at_least(fs, "max_setup_sessions", 1, "freeswitch.")
    _networks(fs.pbx_addresses, "freeswitch.pbx_addresses")
    # Compared address by address with the channel's source (freeswitch/channel.py): a
    # network written here would never match, so only single addresses are accepted.
    for entry in fs.carrier_addresses:
        try:
            ipaddress.ip_address(entry)
        except ValueError:
            raise ConfigError(f"freeswitch.carrier_addresses: {entry!r} is not an IP "
                              "address") from None


def _validate_asterisk(ast: AsteriskSettings) -> None:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", ast.url):
        raise ConfigError(f"asterisk.url {ast.url!r} is not an http(s) URL like "
                          "http://127.0.0.1:8088 (PBX_CONTROL_ASTERISK_URL)")
    _call_limits(ast, "asterisk.")


def _validate_api(api: ApiSettings) -> None:
    _port(api, "listen_port", "api.")
    _at_least(api, "rate_limit_burst", 1, "api.")
    if not api.rate_limit_per_s > 0:
        raise ConfigError(f"api.rate_limit_per_s: must be above 0, not {api.rate_limit_per_s}")
    _networks(api.webhook_allow_networks, "api.webhook_allow_networks")


def _call_limits(section: Any, prefix: str) -> None:
    _at_least(section, "ring_timeout_s", 1, prefix)
    _at_least(section, "max_call_s", 1, prefix)
    if not section.decision_deadline_s > 0:
        raise ConfigError(f"{prefix}decision_deadline_s: must be above 0, not "
                          f"{section.decision_deadline_s}")


def _at_least(section: Any, name: str, low: int, prefix: str = "") -> None:
    value = getattr(section, name)
    if value < low:
        raise ConfigError(f"{prefix}{name}: must be at least {low}, not {value}")


def _port(section: Any, name: str, prefix: str) -> None:
    value = getattr(section, name)
    if not 0 <= value <= 65535:
        raise ConfigError(f"{prefix}{name}: a port 0-65535, not {value}")


def _networks(entries: list[str], name: str) -> None:
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(f"{name}: {entry!r} is not an IP address or network") from None
