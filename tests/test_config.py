"""Settings: layers, and the values refused at load time with the setting's name."""

from __future__ import annotations

import pytest

from pbx_control import config
from pbx_control.config import ConfigError


def load(tmp_path, text: str = "", environ: dict | None = None) -> config.Settings:
    path = tmp_path / "pbx.toml"
    path.write_text(text, encoding="utf-8")
    return config.load(path, environ=environ or {})


def test_defaults_load_and_the_file_and_environment_apply(tmp_path):
    settings = load(tmp_path, "[routing]\nmax_axb_per_number = 7\n",
                    {"PBX_CONTROL_FREESWITCH_ESL_PASSWORD": "s3cret"})
    assert settings.routing.max_axb_per_number == 7
    assert settings.freeswitch.esl_password == "s3cret"


def test_a_secret_may_come_from_a_file_named_in_the_environment(tmp_path):
    secret = tmp_path / "ari"
    secret.write_text("pw\n", encoding="utf-8")
    settings = load(tmp_path, environ={"PBX_CONTROL_ASTERISK_PASSWORD_FILE": str(secret)})
    assert settings.asterisk.password == "pw"


@pytest.mark.parametrize("text, name", [
    ('[freeswitch]\nesl_password = "ClueCon"\n', "freeswitch.esl_password"),
    ('[asterisk]\npassword = "x"\n', "asterisk.password"),
])
def test_secrets_in_the_config_file_are_refused(tmp_path, text, name):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert name in str(err.value) and "_FILE" in str(err.value)
    assert "ClueCon" not in str(err.value)


@pytest.mark.parametrize("text, name", [
    ("[routing]\nrate_limit_attempts = 0\n", "routing.rate_limit_attempts"),
    ("[routing]\nrate_limit_window_s = -1\n", "routing.rate_limit_window_s"),
    ("[routing]\nmax_axb_per_number = 0\n", "routing.max_axb_per_number"),
    ("[routing]\npair_cooldown_s = -5\n", "routing.pair_cooldown_s"),
    ("[routing]\ndedicated_cooldown_s = -1\n", "routing.dedicated_cooldown_s"),
    ('[routing]\noutbound_patterns = ["^(+86"]\n', "routing.outbound_patterns"),
    ('[routing]\nemergency_policy = "ring"\n', "routing.emergency_policy"),
    ("[freeswitch]\nring_timeout_s = 0\n", "freeswitch.ring_timeout_s"),
    ("[freeswitch]\ndecision_deadline_s = 0\n", "freeswitch.decision_deadline_s"),
    ("[freeswitch]\nesl_port = 70000\n", "freeswitch.esl_port"),
    ("[freeswitch]\nlisten_port = -1\n", "freeswitch.listen_port"),
    ('[freeswitch]\npbx_addresses = ["fs.local"]\n', "freeswitch.pbx_addresses"),
    ('[freeswitch]\ncarrier_addresses = ["10.0.0.0/8"]\n', "freeswitch.carrier_addresses"),
    ("[asterisk]\nring_timeout_s = -3\n", "asterisk.ring_timeout_s"),
    ("[asterisk]\ndecision_deadline_s = -1.0\n", "asterisk.decision_deadline_s"),
    ('[asterisk]\nurl = "ws://127.0.0.1:8088"\n', "asterisk.url"),
    ('[asterisk]\nurl = "127.0.0.1:8088"\n', "asterisk.url"),
    ("[api]\nlisten_port = 65536\n", "api.listen_port"),
    ('[api]\nwebhook_allow_networks = ["intranet"]\n', "api.webhook_allow_networks"),
    ("cdr_retention_days = 0\n", "cdr_retention_days"),
])
def test_nonsense_values_are_refused_naming_the_setting(tmp_path, text, name):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert name in str(err.value)


def test_nonsense_from_the_environment_is_refused_too(tmp_path):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, environ={"PBX_CONTROL_ROUTING_RATE_LIMIT_ATTEMPTS": "0"})
    assert "routing.rate_limit_attempts" in str(err.value)


def test_sensible_values_pass(tmp_path):
    settings = load(tmp_path, (
        "[routing]\npair_cooldown_s = 0\ndedicated_cooldown_s = 0\n"
        'emergency_policy = "refuse"\noutbound_patterns = ["^\\\\+86\\\\d+$"]\n'
        '[freeswitch]\npbx_addresses = ["10.0.0.0/8", "::1"]\n'
        'carrier_addresses = ["192.0.2.10"]\n'
        '[asterisk]\nurl = "https://pbx.example:8089/ari"\n'
        '[api]\nwebhook_allow_networks = ["10.1.0.0/16"]\nlisten_port = 0\n'))
    assert settings.routing.emergency_policy == "refuse"
    assert settings.freeswitch.pbx_addresses == ["10.0.0.0/8", "::1"]
