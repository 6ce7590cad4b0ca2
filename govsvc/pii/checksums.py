"""Check characters of the identifiers the recognizers validate: a failed check means "not an identifier"."""

from __future__ import annotations

from datetime import date

# GB 11643-1999 (ISO 7064 MOD 11-2): weights 2^(18-i) mod 11 for positions 1..17.
_ID_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))
_ID_CHECK = "10X98765432"  # S mod 11 -> check character
# First two digits of a resident ID: provinces (GB/T 2260), plus 71 Taiwan, 81 Hong Kong, 82 Macau, 83 the
# residence permits of Taiwan residents.
PROVINCE_CODES = frozenset(
    {11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52, 53, 54}
    | {61, 62, 63, 64, 65, 71, 81, 82, 83}
)
# GB 32100-2015 alphabet (no I, O, S, V, Z) and weights 3^(i-1) mod 31 for positions 1..17.
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_VALUES = {char: index for index, char in enumerate(USCC_ALPHABET)}
_USCC_WEIGHTS = tuple(pow(3, i, 31) for i in range(17))


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check of card numbers."""
    if not digits.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def resident_id_check_char(first17: str) -> str:
    """The MOD 11-2 check character of the first 17 digits of an 18-digit resident ID."""
    total = sum((ord(char) - 48) * weight for char, weight in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11]


def _valid_birth_date(year: int, month: int, day: int, today: date | None = None) -> bool:
    try:
        born = date(year, month, day)
    except ValueError:
        return False
    return date(1900, 1, 1) <= born <= (today or date.today())


def resident_id_valid(value: str, today: date | None = None) -> bool:
    """An 18-digit resident ID (or residence permit): province code, birth date and MOD 11-2 check character."""
    if len(value) != 18 or not value[:17].isdigit():
        return False
    if int(value[:2]) not in PROVINCE_CODES:
        return False
    if not _valid_birth_date(int(value[6:10]), int(value[10:12]), int(value[12:14]), today):
        return False
    return resident_id_check_char(value[:17]) == value[17].upper()


def legacy_resident_id_valid(value: str, today: date | None = None) -> bool:
    """A 15-digit resident ID (issued before 1999): province code and a 19YYMMDD birth date; no check character."""
    if len(value) != 15 or not value.isdigit() or int(value[:2]) not in PROVINCE_CODES:
        return False
    return _valid_birth_date(1900 + int(value[6:8]), int(value[8:10]), int(value[10:12]), today)


def uscc_check_char(first17: str) -> str:
    """The GB 32100-2015 MOD 31 check character of a Unified Social Credit Code."""
    total = sum(_USCC_VALUES[char] * weight for char, weight in zip(first17, _USCC_WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def uscc_valid(value: str) -> bool:
    """An 18-character Unified Social Credit Code with a valid check character."""
    if len(value) != 18 or any(char not in _USCC_VALUES for char in value) or not value[2:8].isdigit():
        return False
    return uscc_check_char(value[:17]) == value[17]
