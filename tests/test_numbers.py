"""Number parsing: the forms people write are accepted, anything with extra text is not."""

from __future__ import annotations

import pytest

from pbx_control.errors import InvalidInput
from pbx_control.numbers import mask, parse, parse_caller

MOBILE = "+8613800000000"


@pytest.mark.parametrize("text", [
    "13800000000", "013800000000", "8613800000000", "+86 138 0000 0000", "+86-138-0000-0000",
    "(+86) 138.0000.0000", " 13800000000 ",
])
def test_national_and_international_forms_give_e164(text):
    assert parse(text) == MOBILE


def test_fixed_line_numbers_with_their_area_code_pass():
    assert parse("010 1234 5678") == "+861012345678"
    assert parse("01012345678") == "+861012345678"


@pytest.mark.parametrize("text", [
    "1380000001x", "13800000004ext5", "13800000006;ext=7", "abc13800000014",
    "13800000000#", "1380000000,1", "+86 138 0000 0000 x12", "1380000\n0000",
])
def test_text_beside_the_digits_refuses_the_whole_input(text):
    with pytest.raises(InvalidInput) as err:
        parse(text, "a")
    assert err.value.field == "a"
    assert "\n" not in err.value.message


@pytest.mark.parametrize("text", ["12345", "110", "123", "+86123"])
def test_local_only_and_short_numbers_are_refused(text):
    with pytest.raises(InvalidInput):
        parse(text)


def test_refusals_never_show_the_full_number():
    with pytest.raises(InvalidInput) as err:
        parse("13800001234ext5")
    assert "13800001234" not in err.value.message
    assert mask(MOBILE) == "+86138****0000"


@pytest.mark.parametrize("text", ["", "anonymous", "Unknown", "0000000000", "abc", None,
                                  "13800000004ext5", "12345"])
def test_withheld_or_unusable_callers_are_none(text):
    assert parse_caller(text) is None


def test_a_usable_caller_is_e164():
    assert parse_caller("8613800000000") == MOBILE


def test_mask_escapes_control_characters_so_a_message_stays_one_line():
    masked = mask("+8\n61380001234")
    assert masked.isprintable() and masked.endswith("1234")
    with pytest.raises(InvalidInput) as err:
        parse("1380000\r\n0001", "b")
    assert err.value.message.isprintable()
