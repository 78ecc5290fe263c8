from datetime import date

import pytest

from yiyun.core import resident_id

# Worked examples printed in GB 11643-1999.
STANDARD_EXAMPLES = ["11010519491231002X", "440524188001010014"]


@pytest.mark.parametrize("number", STANDARD_EXAMPLES)
def test_standard_examples_are_valid(number):
    assert resident_id.check_digit(number[:17]) == number[17]
    assert resident_id.is_valid(number)


def test_parse_reads_area_birth_date_and_sex():
    assert resident_id.parse("11010519491231002X") == ("110105", date(1949, 12, 31), "female")
    assert resident_id.parse("440524188001010014") == ("440524", date(1880, 1, 1), "male")


def test_check_digit_ten_is_written_x():
    assert resident_id.check_digit("11010519491231002") == "X"


@pytest.mark.parametrize(
    "number",
    [
        "11010519491231002Y",  # not a digit or X
        "110105194912310021",  # wrong check digit
        "11010519491231002",  # too short
        "11010519491231002XX",  # too long
        "11010519490231002X",  # 31 February is no date
        "01010519491231002X",  # no address code starts with 0
        "1101051949123100２X",  # full-width digit
        "",
    ],
)
def test_malformed_numbers_are_rejected(number):
    assert not resident_id.is_valid(number)


def test_wrong_check_digit_for_every_alternative_is_rejected():
    body = "11010519491231002"
    for alt in "0123456789":
        assert not resident_id.is_valid(body + alt)


def test_lower_case_x_is_accepted_and_normalized():
    assert resident_id.is_valid("11010519491231002x")
    assert resident_id.normalize(" 11010519491231002x ") == "11010519491231002X"


def test_birth_date_after_today_is_rejected_when_today_is_given():
    number = resident_id.build("430104", date(2030, 1, 2), 123)
    assert resident_id.is_valid(number)
    assert not resident_id.is_valid(number, today=date(2026, 11, 1))


def test_build_round_trips_through_parse():
    number = resident_id.build("430104", date(1985, 7, 9), 457)
    assert resident_id.is_valid(number)
    assert resident_id.parse(number) == ("430104", date(1985, 7, 9), "male")
    assert resident_id.parse(resident_id.build("430104", date(1985, 7, 9), 458))[2] == "female"


def test_parse_rejects_invalid_number():
    with pytest.raises(ValueError):
        resident_id.parse("110105194912310021")


def test_mask_keeps_area_code_and_last_four():
    assert resident_id.mask("11010519491231002X") == "110105********002X"
    with pytest.raises(ValueError):
        resident_id.mask("123")


def test_check_digit_needs_seventeen_digits():
    with pytest.raises(ValueError):
        resident_id.check_digit("1234")
