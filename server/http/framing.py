"""Where an HTTP/1.1 request ends: its head, then a body by Content-Length or chunked.

The worker (server/http/worker.py) reads each request into a buffer without
blocking and hands it to a thread only once it is complete; `RequestFrame` tells
it when that is. It does not validate anything gunicorn's parser checks: whatever
it cannot frame with certainty (bare-LF heads, conflicting or malformed lengths,
unknown transfer codings, bodies over MAX_BODY_BYTES, a head past MAX_HEAD_BYTES)
it hands over as it is, and gunicorn's parser and the app answer it (400, 413).
Feeding is incremental: a client sending one byte at a time costs a scan of that
byte, not of the whole buffer again.
"""

from __future__ import annotations

import re

MAX_HEAD_BYTES = 64 * 1024  # gunicorn refuses request lines past 4 KiB and fields past 8 KiB anyway
MAX_CHUNK_LINE = 1024  # a chunk-size line with extensions
HAND_OVER = -1  # feed(): frame no further, let gunicorn's parser judge what came
_HEX = re.compile(rb"[0-9a-fA-F]{1,16}")
_CONTINUE_LINE = re.compile(rb"\r\nexpect:[ \t]*100-continue[ \t]*(?=\r\n)", re.IGNORECASE)


class RequestFrame:
    """One request's framing state over a growing buffer that starts at the request."""

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self.head_end = 0  # offset just past the blank line, once the head is complete
        self.expects_continue = False  # the client waits for "100 Continue" before its body
        self._scanned = 0  # head: bytes searched so far for its end
        self._length: int | None = None  # body by Content-Length
        self._chunked = False
        self._pos = 0  # chunked: where the next chunk-size line starts
        self._body = 0  # chunked: data bytes so far

    def feed(self, buf: bytearray) -> int | None:
        """Offset where the request ends in `buf`, None while more is needed, or HAND_OVER.

        May remove an `Expect: 100-continue` line from the head (setting expects_continue):
        the worker answers it, so the thread's parser must not answer it again."""
        if not self.head_end:
            outcome = self._feed_head(buf)
            if outcome is not None or not self.head_end:
                return outcome
        if self._chunked:
            return self._feed_chunks(buf)
        end = self.head_end + (self._length or 0)
        return end if len(buf) >= end else None

    def _feed_head(self, buf: bytearray) -> int | None:
        start = max(self._scanned - 3, 0)
        end = buf.find(b"\r\n\r\n", start)
        if end < 0:
            if buf.find(b"\n\n", start) >= 0 or len(buf) > MAX_HEAD_BYTES:
                return HAND_OVER
            self._scanned = len(buf)
            return None
        head = bytes(buf[:end])
        if _CONTINUE_LINE.search(head):
            new_head = _CONTINUE_LINE.sub(b"", head)
            buf[:end] = new_head
            end, head = len(new_head), new_head
            self.expects_continue = head.split(b"\r\n", 1)[0].endswith(b"HTTP/1.1")
        self.head_end = end + 4
        return self._body_framing(head)

    def _body_framing(self, head: bytes) -> int | None:
        lengths, codings = set(), []
        for line in head.split(b"\r\n")[1:]:
            name, sep, value = line.partition(b":")
            name = name.lower()
            if not sep or name != name.strip():
                return HAND_OVER  # obs-fold or whitespace before the colon: gunicorn refuses those
            if name == b"content-length":
                lengths.add(value.strip())
            elif name == b"transfer-encoding":
                codings += [c.strip().lower() for c in value.split(b",")]
        if codings:
            if lengths or codings != [b"chunked"]:
                return HAND_OVER
            self._chunked, self._pos = True, self.head_end
            return None
        if len(lengths) > 1 or (lengths and not next(iter(lengths)).isdigit()):
            return HAND_OVER
        self._length = int(next(iter(lengths))) if lengths else 0
        return HAND_OVER if self._length > self.max_body else None

    def _feed_chunks(self, buf: bytearray) -> int | None:
        while True:
            line_end = buf.find(b"\r\n", self._pos)
            if line_end < 0:
                return HAND_OVER if len(buf) - self._pos > MAX_CHUNK_LINE else None
            size_text = bytes(buf[self._pos : line_end]).split(b";", 1)[0].strip()
            if not _HEX.fullmatch(size_text):
                return HAND_OVER
            size = int(size_text, 16)
            data = line_end + 2
            if size == 0:
                return self._trailers_end(buf, data)
            if self._body + size > self.max_body:
                return HAND_OVER  # the app answers 413 for it
            if len(buf) < data + size + 2:
                return None
            if buf[data + size : data + size + 2] != b"\r\n":
                return HAND_OVER
            self._body += size
            self._pos = data + size + 2

    @staticmethod
    def _trailers_end(buf: bytearray, start: int) -> int | None:
        if buf[start : start + 2] == b"\r\n":
            return start + 2
        end = buf.find(b"\r\n\r\n", start)
        if end >= 0:
            return end + 4
        return HAND_OVER if len(buf) - start > MAX_HEAD_BYTES else None
