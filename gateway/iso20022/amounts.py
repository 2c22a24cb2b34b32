"""Exact conversion between domain amounts (integer minor units) and ISO decimal strings.

The domain never sees a Decimal or a float: ``12345`` tiyn <-> ``"123.45"`` KZT. Every
currency the gateway settles has 2 decimals (see iso20022_schemas/README.md).
"""

from __future__ import annotations

from typing import Final

from gateway.iso20022.errors import AmountError

#: Currencies the gateway settles and their number of decimals (ISO 4217 exponent).
CURRENCY_EXPONENTS: Final[dict[str, int]] = {
    "KZT": 2,
    "AED": 2,
    "CNY": 2,
    "TRY": 2,
    "USD": 2,
    "EUR": 2,
    "SAR": 2,
    "HKD": 2,
    "THB": 2,
}

#: Largest amount the schema admits: 18 total digits, 2 of them decimals.
MAX_MINOR_UNITS: Final[int] = 10**18 - 1


def exponent(currency: str) -> int:
    try:
        return CURRENCY_EXPONENTS[currency]
    except KeyError:
        raise AmountError(f"currency {currency!r} is not settled by the gateway") from None


def to_iso_amount(minor: int, currency: str) -> str:
    """``12345, "KZT"`` -> ``"123.45"``. Refuses zero, negatives and more than 18 digits."""
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise AmountError(f"amount must be an int of minor units, got {type(minor).__name__}")
    if minor <= 0:
        raise AmountError(f"amount must be positive, got {minor}")
    if minor > MAX_MINOR_UNITS:
        raise AmountError(f"amount {minor} exceeds 18 digits")
    exp = exponent(currency)
    units, frac = divmod(minor, 10**exp)
    return f"{units}.{frac:0{exp}d}" if exp else str(units)


def from_iso_amount(text: str, currency: str) -> int:
    """``"123.45"``/``"123.4"``/``"123"`` -> minor units.

    Refuses more decimals than the currency has, zero, negatives and more than 18 digits.
    """
    exp = exponent(currency)
    if exp == 2 and len(text) > 3 and text[-3] == ".":
        # The usual form, "123.45": the same result as below, without the general parsing.
        digits = text[:-3] + text[-2:]
        if digits.isdigit() and digits.isascii():
            minor = int(digits)
            if 0 < minor <= MAX_MINOR_UNITS:
                return minor
    s = text.strip()
    if s.startswith("+"):
        s = s[1:]
    units, dot, frac = s.partition(".")
    if not units:
        units = "0"
    if not (units.isdigit() and units.isascii()) or (
        dot and frac and not (frac.isdigit() and frac.isascii())
    ):
        raise AmountError(f"amount {text!r} is not a decimal number")
    stripped = frac.rstrip("0")
    if len(stripped) > exp:
        raise AmountError(f"amount {text!r} has more than {exp} decimals for {currency}")
    scale: int = 10**exp
    minor = int(units) * scale + (int(stripped.ljust(exp, "0")) if exp else 0)
    if minor <= 0 or minor > MAX_MINOR_UNITS:
        raise AmountError(f"amount {text!r} is out of range")
    return minor


def sum_iso(minors: list[int], exp: int = 2) -> str:
    """Control sum of amounts that all have ``exp`` decimals."""
    total = sum(minors)
    units, frac = divmod(total, 10**exp)
    return f"{units}.{frac:0{exp}d}" if exp else str(units)


def iso_to_minor_any(text: str, exp: int = 2) -> int:
    """A control sum (no currency) -> minor units; refuses more than ``exp`` decimals."""
    if exp == 2 and len(text) > 3 and text[-3] == ".":
        digits = text[:-3] + text[-2:]  # "123.45": the same result as below, faster
        if digits.isdigit() and digits.isascii():
            return int(digits)
    units, _, frac = text.strip().lstrip("+").partition(".")
    stripped = frac.rstrip("0")
    if len(stripped) > exp or not (units or "0").isdigit() or (stripped and not stripped.isdigit()):
        raise AmountError(f"control sum {text!r} is not a {exp}-decimal number")
    scale: int = 10**exp
    return int(units or "0") * scale + (int(stripped.ljust(exp, "0")) if exp else 0)


__all__ = [
    "CURRENCY_EXPONENTS",
    "MAX_MINOR_UNITS",
    "exponent",
    "from_iso_amount",
    "iso_to_minor_any",
    "sum_iso",
    "to_iso_amount",
]
