"""Utilization levels: the one place that decides CRITICAL / HIGH / GOOD / LOW.

The CLI badges, the notebook panel and the reports all call :func:`utilization_level`, so a
pool never shows "HIGH" in one place and "GOOD" in another.
"""
from __future__ import annotations

__all__ = ["utilization_level", "utilization_badge", "LEVEL_BADGES", "LEVELS"]

#: The levels, most severe first.
LEVELS = ("CRITICAL", "HIGH", "GOOD", "LOW")

#: The seed inspector's badges, keyed by level.
LEVEL_BADGES = {"CRITICAL": "🔴", "HIGH": "🟡", "GOOD": "🟢", "LOW": "⚪"}


def utilization_level(percent: float) -> str:
    """The level of a utilization percentage.

    CRITICAL above 90 %, HIGH above 80 %, GOOD from 60 to 80 %, LOW below 60 %.

    Example::

        >>> utilization_level(95.0), utilization_level(85), utilization_level(80), utilization_level(12.5)
        ('CRITICAL', 'HIGH', 'GOOD', 'LOW')

    Args:
        percent: 0–100 (values outside are accepted and classified by the same rule).

    Returns:
        One of :data:`LEVELS`.
    """
    p = float(percent)
    if p > 90.0:
        return "CRITICAL"
    if p > 80.0:
        return "HIGH"
    if p >= 60.0:
        return "GOOD"
    return "LOW"


def utilization_badge(percent: float) -> str:
    """``"95.0% 🔴 CRITICAL"``: the percentage, the level's badge and the level.

    Example::

        >>> utilization_badge(42)
        '42.0% ⚪ LOW'
    """
    level = utilization_level(percent)
    return f"{float(percent):.1f}% {LEVEL_BADGES[level]} {level}"
