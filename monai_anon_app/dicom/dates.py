"""Shifting DICOM dates by a whole number of days (Retain Longitudinal Temporal Information, Modified).

A whole-day offset keeps every interval between dates and every time of day, so TM values stay as
they are. Values that cannot be parsed return ``None``: the caller removes them rather than keep a
real date.
"""

from __future__ import annotations

import datetime as _dt

__all__ = ["shift_da", "shift_dt", "shift_values"]


def _shift_date(text: str, days: int) -> str | None:
    if len(text) == 10 and text[4] == "." and text[7] == ".":  # ACR-NEMA YYYY.MM.DD
        text = text[:4] + text[5:7] + text[8:]
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        day = _dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
        return (day + _dt.timedelta(days=days)).strftime("%Y%m%d").zfill(8)
    except (ValueError, OverflowError):
        return None


def shift_da(value: str, days: int) -> str | None:
    """Shift one DA value (``YYYYMMDD``, or a ``A-B`` range)."""
    value = value.strip()
    if not value:
        return value
    if "-" in value:
        parts = [(_shift_date(p, days) if p else "") for p in value.split("-", 1)]
        return None if None in parts else "-".join(parts)  # type: ignore[arg-type]
    return _shift_date(value, days)


def shift_dt(value: str, days: int) -> str | None:
    """Shift one DT value; a year-only or year-month value moves by the nearest whole year/month."""
    value = value.strip()
    if not value:
        return value
    digits = len(value) - len(value.lstrip("0123456789"))
    if digits >= 8:
        date = _shift_date(value[:8], days)
        return None if date is None else date + value[8:]
    if digits in (4, 6):
        year, month = int(value[:4]), int(value[4:6]) if digits == 6 else 1
        if digits == 4:
            return f"{year + round(days / 365.25):04d}" + value[4:]
        total = year * 12 + (month - 1) + round(days / 30.44)
        return f"{total // 12:04d}{total % 12 + 1:02d}" + value[6:]
    return None


def shift_values(text: str, vr: str, days: int) -> str | None:
    """Shift a backslash-separated DA or DT value; TM and others are returned unchanged."""
    if vr not in ("DA", "DT"):
        return text
    fn = shift_da if vr == "DA" else shift_dt
    out = [fn(v, days) for v in text.split("\\")]
    return None if None in out else "\\".join(out)  # type: ignore[arg-type]
