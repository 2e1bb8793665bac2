"""Every command is built from validated values: CR, LF and anything unexpected refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_control.causes import FORBIDDEN, UNAVAILABLE, UNKNOWN
from pbx_control.freeswitch import commands as cmd

NEWLINES = st.builds(lambda a, nl, b: a + nl + b, st.text(), st.sampled_from(["\n", "\r"]),
                     st.text())


@given(NEWLINES)
def test_no_value_with_a_newline_reaches_a_set(value):
    with pytest.raises(cmd.UnsafeValue):
        cmd.set_var("effective_callee_id_number", value)


@given(NEWLINES)
def test_no_argument_with_a_newline_reaches_an_execute(value):
    with pytest.raises(cmd.UnsafeValue):
        cmd.execute("playback", value)


@pytest.mark.parametrize("value", ["1,2", "1}x", "a b", "", "x" * 65, "+861"])
def test_far_leg_values_cannot_break_out_of_the_variable_block(value):
    with pytest.raises(cmd.UnsafeValue):
        cmd.bridge({"origination_caller_id_number": value}, "sofia/gateway/carrier/1")


def test_only_the_listed_variables_and_applications_are_sent():
    with pytest.raises(cmd.UnsafeValue):
        cmd.set_var("api_hangup_hook", "system")
    with pytest.raises(cmd.UnsafeValue):
        cmd.execute("system", "rm")
    with pytest.raises(cmd.UnsafeValue):
        cmd.bridge({"execute_on_answer": "x"}, "user/1001")
    with pytest.raises(cmd.UnsafeValue):
        cmd.hangup("NOT_A_CAUSE")


def test_the_bridge_is_one_sendmsg_with_the_variable_block_and_dial_string():
    data = cmd.bridge({"origination_caller_id_number": "8617000000001",
                       "origination_caller_id_name": "8617000000001"},
                      "sofia/gateway/carrier/8613800000000")

    assert data == (b"sendmsg\ncall-command: execute\nexecute-app-name: bridge\n"
                    b"execute-app-arg: {origination_caller_id_number=8617000000001,"
                    b"origination_caller_id_name=8617000000001}"
                    b"sofia/gateway/carrier/8613800000000\n\n")


@pytest.mark.parametrize("user", ["10\n01", "1001@evil", "a b", "", "x" * 65])
def test_dial_strings_refuse_odd_users(user):
    with pytest.raises(cmd.UnsafeValue):
        cmd.dial_string("user/{user}@${{domain_name}}", user=user)


def test_dial_strings_fill_the_configured_templates():
    assert cmd.dial_string("user/{user}@${{domain_name}}", user="1001") == (
        "user/1001@${domain_name}")
    assert cmd.dial_string("sofia/gateway/{gateway}/{number}", gateway="cmcc",
                           number="8613800000000") == "sofia/gateway/cmcc/8613800000000"
    with pytest.raises(cmd.UnsafeValue):
        cmd.dial_string("sofia/gateway/{gateway}/{numbr}", gateway="cmcc", number="1")


@pytest.mark.parametrize("value", ["8613800000000", "+86 138", "+86138\n", "abc"])
def test_only_e164_numbers_give_digits(value):
    with pytest.raises(cmd.UnsafeValue):
        cmd.digits(value)


def test_digits_of_an_e164_number():
    assert cmd.digits("+8613800000000") == "8613800000000"


def test_refusals_give_the_table_status_and_cause():
    # 403: respond (recordings 2a, 10a); `hangup CALL_REJECTED` would give 603 (2b).
    assert cmd.refuse(FORBIDDEN) == (
        b"sendmsg\ncall-command: execute\nexecute-app-name: respond\nexecute-app-arg: 403\n\n")
    assert cmd.refuse(UNKNOWN) == (
        b"sendmsg\ncall-command: hangup\nhangup-cause: UNALLOCATED_NUMBER\n\n")
    assert cmd.refuse(UNAVAILABLE) == (
        b"sendmsg\ncall-command: hangup\nhangup-cause: NORMAL_TEMPORARY_FAILURE\n\n")


@pytest.mark.parametrize("password", ["", "two words", "pw\nevent plain ALL", "x" * 300])
def test_event_socket_passwords_that_would_break_the_auth_line_are_refused(password):
    with pytest.raises(cmd.UnsafeValue):
        cmd.auth(password)


def test_recording_paths_and_limits_are_checked():
    data, path = cmd.record_session("/var/lib/freeswitch/recordings/", "0a1b2c3d4e5f")
    assert path == "/var/lib/freeswitch/recordings/0a1b2c3d4e5f.wav"
    assert data.endswith(b"execute-app-arg: " + path.encode() + b"\n\n")
    with pytest.raises(cmd.UnsafeValue):
        cmd.record_session("/tmp/x y", "0a1b2c3d4e5f")
    with pytest.raises(cmd.UnsafeValue):
        cmd.record_session("/tmp", "../../etc/passwd")
    with pytest.raises(cmd.UnsafeValue):
        cmd.sched_hangup(0)
    assert cmd.sched_hangup(60).endswith(b"execute-app-arg: +60 ALLOTTED_TIMEOUT\n\n")


def test_api_commands_take_uuids_and_fixed_words_only():
    assert cmd.api("uuid_exists", "0ba726a5-fd16-440f-ab0b-42764905fa9c") == (
        b"api uuid_exists 0ba726a5-fd16-440f-ab0b-42764905fa9c\n\n")
    with pytest.raises(cmd.UnsafeValue):
        cmd.api("uuid_kill", "x\n\nexit")
