"""Terminal tables of songs and tags (inference.recommend, inference.similar, inference.audio): text cut and
padded to a width in terminal columns, Hangul counting double."""

from __future__ import annotations

import unicodedata


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def cell(text: str, width: int) -> str:
    """``text`` cut and padded to ``width`` terminal columns (Hangul counts double)."""
    out = ""
    for c in text:
        if _width(out + c) > width - (1 if _width(text) > width else 0):
            out += "…"
            break
        out += c
    return out + " " * (width - _width(out))
