"""Printing strings that come from a file (class names, op names, metadata) safely, and fitting
them into columns.

A .qbw file is data: its strings may hold terminal escape sequences, newlines or bidirectional
overrides. Printed raw they could rewrite the terminal or forge lines in a log; `printable`
shows every such character as a visible escape instead.
"""

from __future__ import annotations

import unicodedata

__all__ = ["clip_middle", "printable"]

# Unicode categories never printed as they are: controls (C0, DEL, C1: ESC, CR, LF, ...), format
# characters (bidirectional overrides, zero-width characters), line and paragraph separators,
# surrogates and unassigned code points.
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Cn", "Co", "Zl", "Zp"})


def _escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: object) -> str:
    """`text` (str() of it) with every control, format or separator character written as a
    visible escape (`\\x1b`, `\\u202e`) and backslashes doubled, so the result shows the
    original unambiguously on one line."""
    s = str(text)
    if s.isprintable() and "\\" not in s:
        return s  # the common case: nothing to escape
    out = []
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == " " or unicodedata.category(ch) not in _HIDDEN:
            out.append(ch)
        else:
            out.append(_escape(ch))
    return "".join(out)


def clip_middle(text: str, width: int) -> str:
    """`text` shortened to `width` characters by replacing its middle with '…' (both ends of a
    layer name tell which layer it is: 'blocks.3.stages.1.b.conv' keeps 'blocks.3' and 'b.conv')."""
    if width < 1 or len(text) <= width:
        return text
    if width == 1:
        return "…"
    head = (width - 1 + 1) // 2
    tail = width - 1 - head
    return text[:head] + "…" + (text[-tail:] if tail else "")
