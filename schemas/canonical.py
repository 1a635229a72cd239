"""RFC 8785 JSON Canonicalization Scheme (JCS): the hash input any language can reproduce.

Why not "orjson with sorted keys" (the legacy form): it writes ``1.0`` where JavaScript
writes ``1``, ``1e-07`` where JavaScript writes ``1e-7``, and sorts keys by code point
rather than UTF-16 code unit, so a producer in another language cannot compute the same
bytes. JCS fixes each of these, and off-the-shelf implementations exist for JavaScript
(``canonicalize``), Go, Java, Rust and .NET.

The rules, as implemented here:

- objects: members sorted by the UTF-16 code units of their names; no whitespace;
- strings: ``"`` and ``\\`` escaped, ``\\b \\f \\n \\r \\t`` short forms, other control
  characters as ``\\u00xx`` (lowercase hex); everything else, non-ASCII included, literal;
- numbers: ECMAScript ``Number.prototype.toString`` of the IEEE-754 double (shortest
  round-trip digits; ``1.0`` → ``1``, ``1e21`` → ``1e+21``, ``1e-7`` → ``1e-7``,
  ``-0`` → ``0``); NaN/Infinity and integers beyond ±(2**53 - 1) are refused (I-JSON);
- literals ``true``, ``false``, ``null``; output UTF-8.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any, Final

import orjson

_MAX_SAFE_INT: Final = 2**53 - 1
_encode_str = json.encoder.encode_basestring


class NotCanonicalizable(ValueError):
    """A value JCS cannot represent (NaN, Infinity, an unsafe integer, a non-JSON type)."""


def _utf16_key(name: str) -> bytes:
    return name.encode("utf-16-be", "surrogatepass")


def format_number(value: float | int) -> str:
    """ECMAScript Number.prototype.toString of ``value`` as a double."""
    if isinstance(value, int):
        if abs(value) > _MAX_SAFE_INT:
            raise NotCanonicalizable(f"integer {value} is outside ±(2**53 - 1) (I-JSON)")
        return str(value)
    if not math.isfinite(value):
        raise NotCanonicalizable(f"{value} has no JSON form")
    if value == 0:
        return "0"
    if value.is_integer() and abs(value) <= _MAX_SAFE_INT:
        # Exact below 2**53 (every integer is a double there). Above, ECMAScript writes the
        # shortest round-trip digits padded with zeros (2.0**60 → 1152921504606847000),
        # not the double's exact value (…6976): the general path below does that.
        return str(int(value))
    sign, digit_tuple, exponent = Decimal(repr(value)).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0") or "0"
    exponent = int(exponent) + (len(digit_tuple) - len(digits))
    k = len(digits)
    n = exponent + k  # value = 0.digits * 10**n
    prefix = "-" if sign else ""
    if k <= n <= 21:
        return prefix + digits + "0" * (n - k)
    if 0 < n <= 21:
        return prefix + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return prefix + "0." + "0" * (-n) + digits
    e = n - 1
    mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{prefix}{mantissa}e{'+' if e > 0 else '-'}{abs(e)}"


def _write(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(_encode_str(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int | float):
        out.append(format_number(value))
    elif isinstance(value, dict):
        out.append("{")
        first = True
        for name in value:
            if not isinstance(name, str):
                raise NotCanonicalizable(f"object member name {name!r} is not a string")
        for name in sorted(value, key=_utf16_key):
            if not first:
                out.append(",")
            first = False
            out.append(_encode_str(name))
            out.append(":")
            _write(value[name], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise NotCanonicalizable(f"{type(value).__name__} is not a JSON value")


class _Slow(Exception):
    """The fast path cannot produce this value exactly; use the general writer."""


def _prep(value: Any) -> Any:
    """A copy orjson (sorted keys) writes exactly as JCS would, or :class:`_Slow`.

    orjson differs from JCS only in float forms and in key order for keys with
    characters beyond U+FFFF (code point vs UTF-16 order). Integral floats up to 2**53
    become ints (same digits); other floats are kept only where ``repr`` already is the
    ECMAScript form (non-integral, at least 1e-4, at most 2**53); anything else takes the
    slow path.
    """
    kind = type(value)
    if kind is dict:
        try:
            names = "".join(value)  # one C call checks every key is a str
        except TypeError:
            raise _Slow from None
        if not names.isascii() and max(names) > "\uffff":
            raise _Slow
        out = {}
        for key, item in value.items():
            leaf = type(item)
            if leaf is str or item is None or leaf is bool or (
                    leaf is int and -_MAX_SAFE_INT <= item <= _MAX_SAFE_INT):
                out[key] = item  # the common leaves, without a call
            else:
                out[key] = _prep(item)
        return out
    if kind is list or kind is tuple:
        return [_prep(item) for item in value]
    if kind is float:
        if value.is_integer() and abs(value) <= _MAX_SAFE_INT:
            return int(value)
        if not math.isfinite(value) or abs(value) < 1e-4 or abs(value) > _MAX_SAFE_INT:
            raise _Slow  # repr's exponent forms, and integral doubles beyond 2**53
        return value
    if kind is int:
        if abs(value) > _MAX_SAFE_INT:
            raise _Slow
        return value
    if kind is str or value is None or kind is bool:
        return value
    raise _Slow


def canonicalize(value: Any) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of a JSON value (dicts, lists, str, numbers...).

    The fast path hands :func:`_prep`'s copy to orjson with sorted keys: on that copy (BMP
    keys, ints within ±2**53, floats whose shortest form has no exponent) orjson writes
    exactly the JCS bytes, string escapes included; the cross-checks against ``rfc8785``
    and Node's ``canonicalize`` (``tests/schemas/``) hold it to that. It is about six
    times faster than the standard library's encoder, which matters on the SDK's path.
    """
    try:
        return orjson.dumps(_prep(value), option=orjson.OPT_SORT_KEYS)
    except (_Slow, orjson.JSONEncodeError):  # the general writer decides, and says why
        out: list[str] = []
        _write(value, out)
        text = "".join(out)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate: not valid I-JSON
        raise NotCanonicalizable(f"string is not valid Unicode: {exc.reason}") from None


def canonicalize_slow(value: Any) -> bytes:
    """The general writer alone (tests check the fast path against it)."""
    out: list[str] = []
    _write(value, out)
    return "".join(out).encode("utf-8")

