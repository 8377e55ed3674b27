"""Checks for digits a caller typed."""

from __future__ import annotations

import re


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum used by card and many account numbers."""
    if not digits.isdigit() or len(digits) < 2:
        return False
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def regex_ok(pattern: str, digits: str) -> bool:
    return re.fullmatch(pattern, digits) is not None
