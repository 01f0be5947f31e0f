"""Escaping of hostile text (row text, file names, reasons, the baseline) for everything gradshield-lint prints.

Three targets, one module, so that every reporter and the CLI escape the same way:

* **Terminals and CI logs** (`term_escape`, `log_safe`, `error_text`): control characters (C0 with ESC, BEL,
  CR, LF, TAB; DEL; C1 such as CSI U+009B), line and paragraph separators, and the characters that reorder or
  hide text (bidi overrides and isolates, Trojan Source CVE-2021-42574; zero-width ones) are shown as visible
  escapes (``\\x1b``, ``\\u202e``), so nothing hostile moves the cursor, rings, retitles the window or starts a new
  line. GitHub's runner reads a log line whose text, after leading whitespace, starts with ``::`` as a workflow
  command (``::error::``, ``::add-mask::``, ``::stop-commands::``), and ``##[`` anywhere in a line as an old-style
  one: hostile text never produces either (the first ``:`` becomes ``\\x3a``, the ``[`` after ``##`` ``\\x5b``).
* **GitHub workflow commands** (`escape_data`, `escape_property`): the only lines that may start with ``::`` are
  the GitHub reporter's own annotations; their message and properties are encoded as `@actions/core` does.
* **JSON printed to a log** (`json_text_safe`): the same characters as ``\\uXXXX`` escapes, which decode to the
  same strings.
"""

from __future__ import annotations

import re

# Characters that can reorder or hide text on screen (Trojan Source, CVE-2021-42574) or are invisible.
BIDI_AND_INVISIBLE = frozenset(
    {
        *range(0x202A, 0x202F),  # LRE RLE PDF LRO RLO
        *range(0x2066, 0x206A),  # LRI RLI FSI PDI
        0x200E,
        0x200F,
        0x061C,  # LRM RLM ALM
        0x200B,
        0x2060,
        0xFEFF,  # zero width space, word joiner, BOM
    }
)
_LINE_SEPARATORS = (0x2028, 0x2029)  # end a line in some terminals and log viewers
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f" + "".join(f"\\u{c:04x}" for c in sorted(BIDI_AND_INVISIBLE | set(_LINE_SEPARATORS))) + "]"
)
_UNSAFE_KEEP_LF = re.compile(_UNSAFE.pattern.replace("\x00-\x1f", "\x00-\x09\x0b-\x1f"))
_OLD_COMMAND = "##["
_OLD_COMMAND_SAFE = "##\\x5b"


_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _visible(m: re.Match) -> str:
    ch = m.group()
    if ch in _NAMED:
        return _NAMED[ch]
    c = ord(ch)
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def _guard_line(line: str) -> str:
    """`line` with a workflow command neutralised: a leading ``::`` (after whitespace) and any ``##[``."""
    body = line.lstrip()
    if body.startswith("::"):
        cut = len(line) - len(body)
        line = line[:cut] + "\\x3a" + body[1:]
    return line.replace(_OLD_COMMAND, _OLD_COMMAND_SAFE)


def term_escape(text: object) -> str:
    """`text` as one line that is safe to print on a terminal or in a CI log (see the module doc)."""
    s = "" if text is None else str(text)
    return _guard_line(_UNSAFE.sub(_visible, s))


def log_safe(text: str) -> str:
    """Text composed by a reporter (already escaped fields, own line breaks) with every line checked once more:
    none may start a workflow command. A final guard: fields are escaped with `term_escape` first."""
    return "\n".join(_guard_line(line) for line in text.split("\n"))


def error_text(exc: BaseException) -> str:
    """An error's message for stderr. Our messages may span lines (a list of what was tried), so line feeds are
    kept there, but not in the file name that opens it, and every line is guarded like `log_safe`."""
    text = str(exc)
    file = getattr(exc, "file", None)
    head = ""
    if isinstance(file, str) and file and text.startswith(file):
        head, text = term_escape(file), text[len(file) :]
    return head + log_safe(_UNSAFE_KEEP_LF.sub(_visible, text))


def escape_data(value: object) -> str:
    """Escape workflow-command data (the message after ``::``) as `@actions/core` does: ``%``, CR, LF."""
    s = "" if value is None else str(value)
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(value: object) -> str:
    """Escape a workflow-command property value (``file=``, ``title=``) as `@actions/core` does: also ``:``, ``,``."""
    return escape_data(value).replace(":", "%3A").replace(",", "%2C")


_UNSAFE_KEEP_CRLF = re.compile(_UNSAFE.pattern.replace("\x00-\x1f", "\x00-\x09\x0b\x0c\x0e-\x1f"))


def escape_file_property(path: object) -> str:
    """A file name as a workflow-command property (`file=`). CR and LF are encoded as `@actions/core` encodes them
    (``%0D``, ``%0A``), which the runner decodes, so the annotation lands on the file of that very name; other
    control and invisible characters become visible escapes (the runner decodes nothing else), and so does the
    ``[`` of ``##[``. The whole command stays one log line either way."""
    s = "" if path is None else str(path)
    return escape_property(_UNSAFE_KEEP_CRLF.sub(_visible, s).replace(_OLD_COMMAND, _OLD_COMMAND_SAFE))


_JSON_UNSAFE = re.compile(
    "[\x7f-\x9f" + "".join(f"\\u{c:04x}" for c in sorted(BIDI_AND_INVISIBLE | set(_LINE_SEPARATORS))) + "]"
)


def json_text_safe(text: str) -> str:
    """Serialized JSON (``ensure_ascii=False``) safe to print: DEL, C1, bidi and separator characters, which can
    only occur inside strings, become ``\\uXXXX`` escapes, and so does the ``[`` of ``##[``; the decoded value is
    unchanged. (json.dumps escapes C0 characters itself.)"""
    text = _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text.replace(_OLD_COMMAND, "##\\u005b")
