"""Settings in layers: typed defaults, then a TOML file, then the environment.

The file is named by ``PBX_CONTROL_CONFIG`` (or ``--config`` on the command line). Every
scalar setting can also be given as ``PBX_CONTROL_<SECTION>_<NAME>`` (top-level ones as
``PBX_CONTROL_<NAME>``). Secrets (the event-socket password, the ARI password, the webhook
signing key) are read from the environment or from a file named by ``..._FILE``, never from
the committed TOML.
"""

from __future__ import annotations

import dataclasses
import os
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
    return settings


def _apply_mapping(target: Any, data: dict[str, Any], where: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(target)}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown setting {key!r}")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: [{key}] must be a table")
            _apply_mapping(current, value, f"{where} [{key}]")
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
