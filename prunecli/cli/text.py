"""Print data literally: every name, path and message that reaches a terminal goes through here.

Tensor names, paths, metadata values and exception messages come from files and command lines
that anyone may have written. Printed raw, ``\\n`` forges a second line ("prunecli: ok"), ESC
starts a terminal escape sequence (``\\x1b[2J`` clears the screen), ``\\r`` overwrites the line,
U+202E reverses what follows, and Rich reads ``[/]`` as markup (a MarkupError, exit 70). So:

- ``printable`` writes such characters as Python escapes (``\\n``, ``\\x1b``, ``\\u202e``);
  backslashes are left alone, so a literal backslash-n and a newline print alike — JSON output
  (``--json``, ``--report x.json``) tells them apart;
- ``DataConsole`` is the only Console prunecli prints through: it never reads markup or emoji
  codes in strings and passes every string through ``printable``. Styled text is built as
  ``rich.text.Text`` from literal parts (``styled``), never from markup.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from rich.console import Console
from rich.text import Text

# control (C0, DEL, C1), format (bidi overrides and isolates, zero-width marks), surrogates
# (undecodable bytes of a file name), and the line and paragraph separators
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(value: object) -> str:
    """``str(value)`` with control, format and separator characters written as escapes."""
    text = str(value)
    if text.isprintable():  # the common case: nothing to do (also False for non-ASCII spaces)
        return text
    return "".join(
        _escape(char) if unicodedata.category(char) in _ESCAPED_CATEGORIES else char
        for char in text
    )


def styled(*parts: str | tuple[str, str]) -> Text:
    """``Text.assemble`` of literal parts: ``"plain"`` or ``("text", "style")``, each printable."""
    return Text.assemble(
        *(
            (printable(part[0]), part[1]) if isinstance(part, tuple) else printable(part)
            for part in parts
        )
    )


class DataConsole(Console):
    """A Rich console for data: strings are printed literally (no markup, no emoji codes, no
    highlighting) with control characters escaped, wherever Rich turns a string into text —
    ``print`` arguments, table cells, headers, footers and titles."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(markup=False, emoji=False, highlight=False, **kwargs)

    def render_str(  # type: ignore[override]
        self,
        text: str,
        *,
        style: Any = "",
        justify: Any = None,
        overflow: Any = None,
        **_: Any,  # emoji, markup, highlight, highlighter: never for data
    ) -> Text:
        return Text(printable(text), style=style, justify=justify, overflow=overflow)


def markdown_cell(value: object) -> str:
    """A value inside a Markdown line or table cell: printable, and literal — it cannot end the
    cell (``|``), open HTML (``<``), a link (``[``), code or emphasis (backslash escapes)."""
    return _MARKDOWN.sub(r"\\\g<0>", printable(value))


_MARKDOWN = re.compile(r"[\\`*\[\]|<>&]")
