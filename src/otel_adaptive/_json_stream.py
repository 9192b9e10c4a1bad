"""Split a text stream into JSON records, holding only a bounded window of it.

A record is a top-level JSON value, or one element of a top-level array (arrays
of spans are read element by element, so a huge array on one line never sits in
memory whole). Values may span lines (pretty-printed objects). After a malformed
value, reading resumes at the next line that starts (in column 0) with ``{`` or
``[``: the next record of JSON-lines files and of pretty-printed output alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Final, NamedTuple, TextIO

#: Characters read from the stream at a time (the window grows for longer records).
CHUNK_CHARS: Final = 1 << 20
#: A record longer than this is rejected rather than held in memory.
MAX_RECORD_CHARS: Final = 64 << 20

_DECODER: Final = json.JSONDecoder()
_WHITESPACE: Final = re.compile(r"[ \t\r\n\ufeff]*")
_RECORD_START: Final = re.compile(r"\n[\[{]")


class JsonRecord(NamedTuple):
    """One value read, or why it could not be (``error``), and the line it starts on.

    ``element`` is the position within a top-level array, None for a top-level value.
    """

    line: int
    value: object
    error: str | None
    element: int | None = None


class JsonRecords:
    """Iterates over the :class:`JsonRecord` of a text stream, once."""

    def __init__(
        self,
        stream: TextIO,
        *,
        chunk_chars: int = CHUNK_CHARS,
        max_record_chars: int = MAX_RECORD_CHARS,
    ) -> None:
        self._stream = stream
        self._chunk = chunk_chars
        self._max_record = max_record_chars
        self._buf = ""
        self._pos = 0
        self._line = 1  # the line of self._pos
        self._eof = False

    # --- the window -----------------------------------------------------------------------------

    def _fill(self) -> bool:
        """Drop what was consumed and read more; False at the end of the stream."""
        if self._eof:
            return False
        if self._pos:
            self._buf = self._buf[self._pos :]
            self._pos = 0
        # Reading as much again as is held keeps a long record's re-decoding linear.
        data = self._stream.read(max(self._chunk, len(self._buf)))
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    def _advance(self, to: int) -> None:
        self._line += self._buf.count("\n", self._pos, to)
        self._pos = to

    def _skip_whitespace(self) -> str:
        """Skip whitespace; the next character, or "" at the end."""
        while True:
            end = _WHITESPACE.match(self._buf, self._pos)
            self._advance(end.end() if end else self._pos)
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._fill():
                return ""

    def _resync(self) -> None:
        """Skip to the start of the next line beginning with ``{`` or ``[``."""
        while True:
            found = _RECORD_START.search(self._buf, self._pos)
            if found is not None:
                self._advance(found.start() + 1)
                return
            # Keep the last character: it may be the newline of the next record start.
            self._advance(max(self._pos, len(self._buf) - 1))
            if not self._fill():
                self._advance(len(self._buf))
                return

    # --- values ---------------------------------------------------------------------------------

    def _decode(self, stop_at_next_record: bool) -> tuple[object, int] | str:
        """The value at the position and its end offset from it, or an error message."""
        while True:
            try:
                value, end = _DECODER.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as exc:
                # More input may complete the value, unless the next record already began.
                complete = stop_at_next_record and _RECORD_START.search(self._buf, self._pos)
                if not complete and self._within_limit() and self._fill():
                    continue
                if not self._within_limit():
                    return f"a record longer than {self._max_record} characters"
                return f"not valid JSON: {exc.msg} ({self._where(exc.pos)})"
            except RecursionError:
                return "not valid JSON: nested too deeply"
            if end == len(self._buf) and self._within_limit() and self._fill():
                continue  # a number may go on in the next chunk
            return value, end - self._pos

    def _within_limit(self) -> bool:
        return len(self._buf) - self._pos < self._max_record

    def _where(self, position: int) -> str:
        line = self._line + self._buf.count("\n", self._pos, position)
        column = position - (self._buf.rfind("\n", 0, position) + 1) + 1
        return f"line {line}, column {column}"

    def _rest_of_line_is_blank(self) -> bool:
        while True:
            newline = self._buf.find("\n", self._pos)
            if newline >= 0 or not self._fill():
                end = len(self._buf) if newline < 0 else newline
                return not self._buf[self._pos : end].strip()

    def __iter__(self) -> Iterator[JsonRecord]:
        while True:
            first = self._skip_whitespace()
            if not first:
                return
            if first == "[":
                yield from self._array()
                continue
            line = self._line
            decoded = self._decode(stop_at_next_record=True)
            if isinstance(decoded, str):
                yield JsonRecord(line, None, decoded)
                self._resync()
                continue
            value, length = decoded
            self._advance(self._pos + length)
            if self._rest_of_line_is_blank():
                yield JsonRecord(line, value, None)
            else:
                yield JsonRecord(line, None, "unexpected text after the JSON value")
                self._resync()

    def _array(self) -> Iterator[JsonRecord]:
        start_line = self._line
        self._advance(self._pos + 1)  # the "["
        index = 0
        while True:
            char = self._skip_whitespace()
            if char == "]" and index == 0:
                self._advance(self._pos + 1)
                yield JsonRecord(start_line, [], None)
                return
            if not char:
                yield JsonRecord(start_line, None, "not valid JSON: the array is not closed")
                return
            line = self._line
            # Elements may start in column 0 (pretty-printed without indent): read on.
            decoded = self._decode(stop_at_next_record=False)
            if isinstance(decoded, str):
                yield JsonRecord(line, None, decoded, index)
                self._resync()
                return
            value, length = decoded
            self._advance(self._pos + length)
            yield JsonRecord(line, value, None, index)
            index += 1
            char = self._skip_whitespace()
            self._advance(self._pos + (1 if char in ",]" and char else 0))
            if char == "]":
                return
            if char != ",":
                yield JsonRecord(self._line, None, "not valid JSON: expected ',' or ']'", index)
                self._resync()
                return
