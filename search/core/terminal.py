"""Text for a terminal: what users' files and databases hold is shown, never obeyed.

Class names (a CSV label, a folder name), file names, study names, trial attrs and error messages
reach the terminal; an escape sequence among them (``cat\x1b]0;PWNED\x07`` retitles the window,
others move the cursor, rewrite earlier lines or, in some terminals, run commands) would be
obeyed. :func:`printable` shows control characters as Python escapes instead; every printer goes
through it (the CLI's ``echo``, the log handlers' :class:`TerminalFilter`, progress bar labels).
"""

from __future__ import annotations

import logging
import re

# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional overrides and isolates
# that reorder what is shown (Trojan Source).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with control characters written as escapes (``\\x1b``, ``\\r``, ``\\u202e``); newlines and
    tabs stay."""
    return _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)


class TerminalFilter(logging.Filter):
    """Escapes control characters in every record before a handler writes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = printable(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_text:
            record.exc_text = printable(record.exc_text)
        return True
