"""Reading numbers out as English words ("42" → "forty two")."""

from __future__ import annotations

_ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
)  # fmt: skip
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_IRREGULAR = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}

MAX_GROUPED_DIGITS = 15
"""Integers with more digits than this are read digit by digit (nobody says quadrillions)."""


def digits_to_words(digits: str) -> list[str]:
    """Read a digit string one digit at a time: "0451" → zero four five one."""
    return [_ONES[int(d)] for d in digits if d.isdigit()]


def _under_thousand(n: int) -> list[str]:
    words: list[str] = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words += [_ONES[hundreds], "hundred"]
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(_TENS[tens])
        if ones:
            words.append(_ONES[ones])
    elif rest or not words:
        words.append(_ONES[rest])
    return words


def int_to_words(n: int) -> list[str]:
    """Read a non-negative integer: 1_250_000 → one million two hundred fifty thousand.

    Integers of more than ``MAX_GROUPED_DIGITS`` digits are read digit by digit.
    """
    if n < 0:
        return ["minus", *int_to_words(-n)]
    if n >= 10**MAX_GROUPED_DIGITS:
        return digits_to_words(str(n))
    if n < 1000:
        return _under_thousand(n)
    words: list[str] = []
    for scale, name in _SCALES:
        count, n = divmod(n, scale)
        if count:
            words += [*_under_thousand(count), name]
    if n:
        words += _under_thousand(n)
    return words


def year_to_words(n: int) -> list[str]:
    """Read a four-digit number the way years are said: 1984 → nineteen eighty four.

    2000-2009 are "two thousand (five)"; x00 years are "nineteen hundred"; 1905 is
    "nineteen oh five". Numbers outside 1100-2099 are read as plain integers.
    """
    if not 1100 <= n <= 2099 or 2000 <= n <= 2009:
        return int_to_words(n)
    high, low = divmod(n, 100)
    words = _under_thousand(high)
    if low == 0:
        return [*words, "hundred"]
    if low < 10:
        return [*words, "oh", _ONES[low]]
    return [*words, *_under_thousand(low)]


def ordinal_words(n: int) -> list[str]:
    """Read an ordinal: 21 → twenty first, 100 → one hundredth."""
    words = int_to_words(n)
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        words[-1] = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return words


def number_to_words(token: str) -> list[str]:
    """Read a numeric token: "42", "1,000,000", "3.14", "-5", "1984".

    Thousands separators (commas) are dropped, the fractional part is read digit by digit
    after "point", and a bare four-digit integer between 1100 and 2099 is read as a year.
    """
    negative = token.startswith("-")
    body = token.lstrip("-")
    whole, _, fraction = body.partition(".")
    grouped = "," in whole
    whole = whole.replace(",", "")
    words: list[str] = ["minus"] if negative else []
    if not whole.isdigit():
        return [*words, *digits_to_words(body)]
    if len(whole) > MAX_GROUPED_DIGITS:
        words += digits_to_words(whole)
    elif len(whole) == 4 and not grouped and not fraction and not negative:
        words += year_to_words(int(whole))
    else:
        words += int_to_words(int(whole))
    if fraction:
        words += ["point", *digits_to_words(fraction)]
    return words


def time_to_words(hours: int, minutes: int) -> list[str]:
    """Read a clock time: 10:30 → ten thirty, 9:05 → nine oh five, 7:00 → seven o'clock."""
    words = int_to_words(hours)
    if minutes == 0:
        return [*words, "o'clock"]
    if minutes < 10:
        return [*words, "oh", _ONES[minutes]]
    return [*words, *int_to_words(minutes)]


_CURRENCY = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "€": ("euro", "euros", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
}


def money_to_words(symbol: str, amount: str) -> list[str]:
    """Read an amount of money: $5 → five dollars, $2.50 → two dollars fifty cents.

    Yen has no minor unit and no plural; amounts with more than two decimals are read as a
    decimal number followed by the currency.
    """
    if symbol == "¥":
        return [*number_to_words(amount), "yen"]
    one, many, minor_one, minor_many = _CURRENCY.get(symbol, _CURRENCY["$"])
    whole, _, cents = amount.replace(",", "").partition(".")
    if len(cents) > 2 or not whole.isdigit() or len(whole) > MAX_GROUPED_DIGITS:
        return [*number_to_words(amount), many]
    units = int(whole)
    minor = int(cents.ljust(2, "0")) if cents else 0
    words: list[str] = []
    if units or not minor:
        words += [*int_to_words(units), one if units == 1 else many]
    if minor:
        words += [*int_to_words(minor), minor_one if minor == 1 else minor_many]
    return words
