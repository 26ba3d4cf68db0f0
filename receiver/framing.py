"""When has a client sent enough of its HTTP/1.1 request to be worth a thread?

The receiver's gunicorn worker (receiver.gunicorn_worker) reads each request in its event
loop, where a waiting connection costs a buffer and no thread, and hands it to a request
thread only once this scanner says so. A client that dribbles its request a byte at a time
then holds no thread at all, however many of them there are.

The scanner never judges a request: gunicorn's parser does that, strictly (RFC 9112), in the
thread. It only says "not yet" (`NEED_MORE`) or "hand it over" (`READY`), and it says
`READY` early whenever it has a doubt, because then the parser answers at once:

- the header section is complete, and the body too (by Content-Length, or the chunked
  framing up to the last chunk and the trailers);
- anything the parser refuses without reading the body: two Content-Length headers, one
  that is not a number, Content-Length with Transfer-Encoding, a transfer coding other than
  chunked, a chunk size that is not hex, a line ending in a bare LF;
- a body announced or already read beyond `body_limit` (the app answers 413 without it);
- a header section beyond `head_limit` without its end (the parser answers 431).

It is incremental: `feed` is called with the whole buffer as it grows, and remembers how far
it looked, so a body arriving in many pieces is scanned once. Pure: bytes in, a decision out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

NEED_MORE = "need-more"
READY = "ready"

_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
# A chunk-size line longer than this is no chunk size: the parser will say so.
_MAX_CHUNK_LINE = 4096


@dataclass
class RequestScanner:
    body_limit: int
    head_limit: int = 256 * 1024
    expect_continue: bool = field(default=False, init=False)  # the client waits for "100 Continue"
    _head_end: int = field(default=-1, init=False)  # offset of the body's first byte
    _looked: int = field(default=0, init=False)  # how far the header end was searched for
    _length: int | None = field(default=None, init=False)  # Content-Length, when framed by it
    _chunked: bool = field(default=False, init=False)
    _pos: int = field(default=0, init=False)  # chunked: start of the next chunk-size line
    _body: int = field(default=0, init=False)  # chunked: data bytes seen so far
    _done: bool = field(default=False, init=False)

    @property
    def head_complete(self) -> bool:
        return self._head_end >= 0

    def feed(self, buf: bytes | bytearray | memoryview) -> str:
        """The decision for the request at the start of `buf` (everything read so far)."""
        if self._done:
            return READY
        if self._head_end < 0:
            decision = self._scan_head(buf)
            if decision is not None:
                return self._finish(decision)
        if self._length is not None:
            return self._finish(READY) if len(buf) - self._head_end >= self._length else NEED_MORE
        if self._chunked:
            return self._scan_chunks(buf)
        return self._finish(READY)  # no body

    def _finish(self, decision: str) -> str:
        self._done = decision == READY
        return decision

    def _scan_head(self, buf: bytes | bytearray | memoryview) -> str | None:
        data = bytes(buf[: self.head_limit + 4])
        start = max(0, self._looked - 3)
        end = data.find(b"\r\n\r\n", start)
        bare = data.find(b"\n\n", start)
        if bare >= 0 and (end < 0 or bare < end):
            return READY  # a bare LF line ending: the parser's call
        if end < 0:
            self._looked = len(data)
            return READY if len(data) > self.head_limit else NEED_MORE
        self._head_end = end + 4
        lines = data[:end].split(b"\r\n")
        lengths: list[bytes] = []
        codings: list[bytes] = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                return READY  # not a header line: the parser's call
            name = name.lower()
            if name == b"content-length":
                lengths.append(value.strip(b" \t"))
            elif name == b"transfer-encoding":
                codings.extend(v.strip(b" \t").lower() for v in value.split(b","))
            elif name == b"expect" and value.strip(b" \t").lower() == b"100-continue":
                self.expect_continue = lines[0].endswith(b"HTTP/1.1")
        if codings:
            if lengths or codings != [b"chunked"]:
                return READY  # refused by the parser without its body
            self._chunked = True
            self._pos = self._head_end
            return None
        if not lengths:
            return READY  # no body
        if len(lengths) > 1 or not lengths[0].isdigit():
            return READY  # refused by the parser without its body
        self._length = int(lengths[0])
        if self._length > self.body_limit:
            return READY  # refused by the app (413) without its body
        return None

    def _scan_chunks(self, buf: bytes | bytearray | memoryview) -> str:
        data = bytes(buf[self._pos:]) if self._pos else bytes(buf)
        offset = 0
        while True:
            eol = data.find(b"\r\n", offset)
            if eol < 0:
                self._pos += offset
                return self._finish(READY) if len(data) - offset > _MAX_CHUNK_LINE else NEED_MORE
            size_text = data[offset:eol].split(b";", 1)[0].strip(b" \t")
            if not _HEX.fullmatch(size_text):
                return self._finish(READY)  # the parser refuses it
            size = int(size_text, 16)
            if size == 0:
                trailers = eol + 2
                if data[trailers:trailers + 2] == b"\r\n" or data.find(b"\r\n\r\n", eol) >= 0:
                    return self._finish(READY)
                self._pos += offset
                return READY if len(data) - offset > self.head_limit else NEED_MORE
            self._body += size
            if self._body > self.body_limit:
                return self._finish(READY)  # the app answers 413 as it reads
            after = eol + 2 + size + 2
            if after > len(data):
                self._body -= size  # counted again when the whole chunk is here
                self._pos += offset
                return NEED_MORE
            offset = after
