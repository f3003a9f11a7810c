"""How the report writes numbers, sizes, times and p-values (one place, for the HTML and the Markdown)."""

from __future__ import annotations

import datetime

MISSING = "—"


def number(value, spec: str = "{}") -> str:
    """``spec.format(value)``, or a dash when there is no value."""
    return MISSING if value is None else spec.format(value)


def mebibytes(value: int | None) -> str:
    """Bytes as MiB (GiB from 10 GiB on)."""
    if value is None:
        return MISSING
    if value >= 10 * 1024**3:
        return f"{value / 1024**3:,.1f} GiB"
    return f"{value / 1024**2:,.0f} MiB"


def when(unix_seconds: float | None) -> str:
    """Unix seconds as a UTC date and time to the minute."""
    if unix_seconds is None:
        return MISSING
    moment = datetime.datetime.fromtimestamp(unix_seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def p_value(value: float | None) -> str:
    """A p-value readably: three decimals (four below 0.001), or its power of ten when tinier."""
    if value is None:
        return MISSING
    if value >= 0.001:
        return f"{value:.3f}"
    if value >= 0.0001:
        return f"{value:.4f}"
    if value == 0:
        return "< 1e-300"
    return f"{value:.1e}"
