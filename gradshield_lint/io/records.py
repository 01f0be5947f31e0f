"""Line-numbered records of JSON Lines, JSON and CSV files: the one reader behind every error that names a file and
a line (dataset rows in `rows.py`, probe files in `scoring/probes`). Binary file objects in, (line, record) out;
malformed input raises `InputError` naming the file and the physical line (callers with an error class of their
own re-raise it with the same place). JSON goes through `safejson`, so nesting and integer limits are errors too.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterator
from typing import Any

from gradshield_lint.errors import InputError
from gradshield_lint.io import safejson

Records = Iterator[tuple[int, Any]]


def decode_line(raw: bytes, source: str, lineno: int) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"not UTF-8: byte 0x{raw[exc.start]:02x} at column {exc.start + 1}; re-encode the file as UTF-8",
            file=source,
            line=lineno,
        ) from None
    if lineno == 1 and text.startswith("\ufeff"):
        text = text[1:]
    return text


def jsonl_records(fh: Any, source: str) -> Records:
    """(physical line, value) of each non-blank line of a JSON Lines file (binary `fh`)."""
    for lineno, raw in enumerate(fh, start=1):
        text = decode_line(raw, source, lineno)
        if not text.strip():
            continue
        try:
            record = safejson.loads(text.rstrip("\r\n"))
        except json.JSONDecodeError as exc:
            raise InputError(
                f"malformed JSON: {exc.msg} (column {exc.colno}); each line must be one complete JSON object",
                file=source,
                line=lineno,
            ) from None
        yield lineno, record


class JsonStream:
    """Incremental reader of top-level JSON values from a binary file: a list `[v, v, ...]` one element at a time,
    or concatenated values (JSON lines). Keeps only the unread part of the current chunk (plus a partial value)."""

    CHUNK = 1 << 18

    def __init__(self, fh: Any, source: str) -> None:
        self.fh = fh
        self.source = source
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
        self.json = json.JSONDecoder()
        self.buf = ""
        self.pos = 0
        self.nl = 0  # newlines in the file before buf[nl_pos] (counted incrementally: positions only grow)
        self.nl_pos = 0
        self.eof = False

    def line_at(self, pos: int) -> int:
        """The physical 1-based line of buf[pos]."""
        if pos >= self.nl_pos:
            self.nl += self.buf.count("\n", self.nl_pos, pos)
            self.nl_pos = pos
            return self.nl + 1
        return self.nl - self.buf.count("\n", pos, self.nl_pos) + 1

    def _fill(self, size: int = 0) -> bool:
        if self.eof:
            return False
        chunk = self.fh.read(max(size, self.CHUNK))
        pending = self.decoder.getstate()[0]
        try:
            text = self.decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            data = pending + chunk
            line = self.line_at(len(self.buf)) + data[: exc.start].count(b"\n")
            raise InputError(
                f"not UTF-8: byte 0x{data[exc.start]:02x}; re-encode the file as UTF-8", file=self.source, line=line
            ) from None
        if not chunk:
            self.eof = True
        if self.pos > self.CHUNK:  # drop consumed text
            drop = self.pos
            self.line_at(drop)
            self.nl_pos -= drop
            self.buf = self.buf[drop:]
            self.pos = 0
        self.buf += text
        return bool(chunk) or bool(text)

    def peek(self) -> str:
        """The next non-whitespace character ('' at end of file); `pos` is moved onto it."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._fill():
                return ""

    def value(self) -> tuple[int, Any]:
        """Decode the value at `pos` (after peek()); returns (its physical line, value)."""
        while True:
            start = self.pos
            try:
                value, end = safejson.raw_decode(self.json, self.buf, start)
            except json.JSONDecodeError as exc:
                incomplete = exc.msg.startswith("Unterminated string") or exc.pos >= len(self.buf) - 32
                if incomplete and not self.eof:
                    self._fill(len(self.buf) - start)  # geometric growth: a huge record is decoded O(log) times
                    continue
                raise InputError(
                    f"malformed JSON: {exc.msg} (column {exc.pos - self.buf.rfind(chr(10), 0, exc.pos)})",
                    file=self.source,
                    line=self.line_at(exc.pos),
                ) from None
            if end >= len(self.buf) and not isinstance(value, (dict, list)) and not self.eof:
                self._fill()  # a number may continue in the next chunk
                continue
            line = self.line_at(start)
            self.pos = end
            return line, value

    def fail(self, msg: str) -> InputError:
        return InputError(msg, file=self.source, line=self.line_at(self.pos))


def json_records(fh: Any, source: str, *, list_lines: bool = False) -> Records:
    """The records of a JSON file (binary `fh`): the elements of a top-level list, numbered by index + 1 (by the
    physical line each starts on with `list_lines`), or concatenated values (JSON lines), by physical line."""
    s = JsonStream(fh, source)
    first = s.peek()
    if first == "[":
        s.pos += 1
        index = 0
        if s.peek() == "]":
            s.pos += 1
        else:
            while True:
                if s.peek() == "":
                    raise s.fail("malformed JSON: the list is not closed (truncated file?)")
                line, value = s.value()
                index += 1
                yield (line if list_lines else index), value
                c = s.peek()
                if c == ",":
                    s.pos += 1
                    continue
                if c == "]":
                    s.pos += 1
                    break
                raise s.fail(
                    "malformed JSON: the list is not closed (truncated file?)"
                    if c == ""
                    else f"malformed JSON: expected ',' or ']' after record {index}"
                )
        if s.peek() != "":
            raise s.fail("malformed JSON: extra data after the list")
    elif first == "{":  # JSON lines written with a .json suffix (Dataset.to_json does this)
        while s.peek() != "":
            yield s.value()
    elif first == "":
        return
    else:
        raise s.fail("expected a JSON list of records ([{...}, ...]) or one object per line")


_CSV_FIELD_LIMIT = 2**31 - 1


def csv_records(fh: Any, source: str, delimiter: str) -> tuple[list[str] | None, Records]:
    """A dataset table: the header and (line the record starts on, {column: cell}) per record. Duplicate columns
    and a record whose field count is not the header's are errors; blank lines are skipped."""
    rows = csv_rows(fh, source, delimiter)
    header: list[str] | None = None
    header_line = 0
    for header_line, fields in rows:  # noqa: B007 - the header's line is named below
        if fields:  # blank lines before the header are skipped
            header = fields
            break
    if header is None:
        return None, iter(())
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise InputError(
            f"duplicate column(s) in the header: {', '.join(repr(d) for d in dupes)}", file=source, line=header_line
        )

    def records() -> Records:
        assert header is not None
        for start, fields in rows:
            if not fields or fields == [""]:
                continue
            if len(fields) != len(header):
                raise InputError(
                    f"expected {len(header)} fields (the header's), got {len(fields)}", file=source, line=start
                )
            yield start, dict(zip(header, fields))

    return header, records()


def csv_rows(fh: Any, source: str, delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """(line the row starts on, fields) of every row of a CSV/TSV file, the header included; quoted fields may span
    lines. A malformed row raises `InputError` at its line. What a row means is the caller's business."""
    line_no = [0]

    def lines() -> Iterator[str]:
        for raw in fh:
            line_no[0] += 1
            yield decode_line(raw, source, line_no[0])

    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)
    reader = csv.reader(lines(), delimiter=delimiter, strict=True)
    prev = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            hint = " (a quote that is never closed?)" if "end of data" in str(exc) else ""
            raise InputError(f"malformed CSV: {exc}{hint}", file=source, line=prev + 1) from None
        start, prev = prev + 1, reader.line_num
        yield start, fields


__all__ = ["JsonStream", "Records", "csv_records", "csv_rows", "decode_line", "json_records", "jsonl_records"]
