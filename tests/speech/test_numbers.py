import pytest

from services.speech.numbers import (
    int_to_words,
    money_to_words,
    number_to_words,
    ordinal_words,
    time_to_words,
    year_to_words,
)


def said(words: list[str]) -> str:
    return " ".join(words)


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "zero"),
        (7, "seven"),
        (13, "thirteen"),
        (42, "forty two"),
        (100, "one hundred"),
        (101, "one hundred one"),
        (999, "nine hundred ninety nine"),
        (1000, "one thousand"),
        (12_345, "twelve thousand three hundred forty five"),
        (1_000_000, "one million"),
        (1_250_000, "one million two hundred fifty thousand"),
        (3_000_000_007, "three billion seven"),
        (-4, "minus four"),
    ],
)
def test_integers(n, expected):
    assert said(int_to_words(n)) == expected


def test_huge_integers_are_read_digit_by_digit():
    assert said(int_to_words(10**20)) == "one" + " zero" * 20


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1984, "nineteen eighty four"),
        (1905, "nineteen oh five"),
        (1900, "nineteen hundred"),
        (2000, "two thousand"),
        (2007, "two thousand seven"),
        (2024, "twenty twenty four"),
        (1066, "one thousand sixty six"),
    ],
)
def test_years(n, expected):
    assert said(year_to_words(n)) == expected


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("42", "forty two"),
        ("3.5", "three point five"),
        ("3.14", "three point one four"),
        ("0.5", "zero point five"),
        ("-5", "minus five"),
        ("1,000,000", "one million"),
        ("1984", "nineteen eighty four"),
        ("1,984", "one thousand nine hundred eighty four"),
        ("007", "seven"),
    ],
)
def test_number_tokens(token, expected):
    assert said(number_to_words(token)) == expected


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, "first"), (2, "second"), (3, "third"), (5, "fifth"), (12, "twelfth"),
     (20, "twentieth"), (21, "twenty first"), (100, "one hundredth")],
)  # fmt: skip
def test_ordinals(n, expected):
    assert said(ordinal_words(n)) == expected


def test_times():
    assert said(time_to_words(10, 30)) == "ten thirty"
    assert said(time_to_words(9, 5)) == "nine oh five"
    assert said(time_to_words(7, 0)) == "seven o'clock"


@pytest.mark.parametrize(
    ("symbol", "amount", "expected"),
    [
        ("$", "5", "five dollars"),
        ("$", "1", "one dollar"),
        ("$", "2.50", "two dollars fifty cents"),
        ("$", "0.01", "one cent"),
        ("$", "1,200", "one thousand two hundred dollars"),
        ("€", "3", "three euros"),
        ("£", "2.5", "two pounds fifty pence"),
        ("¥", "500", "five hundred yen"),
        ("$", "1.2345", "one point two three four five dollars"),
    ],
)
def test_money(symbol, amount, expected):
    assert said(money_to_words(symbol, amount)) == expected
