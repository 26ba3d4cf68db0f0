"""receiver.framing: when a request read by the worker's event loop goes to a thread.

The scanner never judges a request (gunicorn's parser does); it only decides "not yet" or
"hand it over". These scenarios pin the two ways it could go wrong: handing over too early
(a slow client then holds a thread) and never handing over (a request that is complete, or
one the parser would refuse at once, waits for the read deadline).
"""

from __future__ import annotations

import pytest

from receiver.framing import NEED_MORE, READY, RequestScanner

HEAD = b"POST /hook/x HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"


def decisions(request: bytes, *, step: int = 1, body_limit: int = 1 << 20) -> list[str]:
    """Feed `request` `step` bytes at a time, as a dribbling client sends it."""
    scanner = RequestScanner(body_limit)
    return [scanner.feed(request[:end]) for end in range(step, len(request) + step, step)]


def ready_at(request: bytes, **kw: int) -> int:
    """How many bytes had arrived when the scanner first said READY (-1: never)."""
    for i, decision in enumerate(decisions(request, **kw), start=1):
        if decision == READY:
            return i * kw.get("step", 1)
    return -1


def test_a_request_without_a_body_is_ready_when_its_headers_end() -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n"
    assert ready_at(request) == len(request)


def test_a_body_of_known_length_is_ready_at_its_last_byte() -> None:
    body = b'{"ref": "refs/heads/main"}'
    request = HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body
    assert ready_at(request) == len(request)


def test_a_chunked_body_is_ready_after_its_last_chunk_and_trailers() -> None:
    request = HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
    assert ready_at(request) == len(request)
    with_trailer = request[:-2] + b"X-Checksum: abc\r\n\r\n"
    assert ready_at(with_trailer) == len(with_trailer)


def test_chunk_data_that_looks_like_the_end_does_not_end_the_body() -> None:
    data = b"0\r\n\r\n" * 3
    request = HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(data) + data + b"\r\n0\r\n\r\n"
    assert ready_at(request) == len(request)


@pytest.mark.parametrize("framing", [
    b"Content-Length: 10\r\nContent-Length: 12\r\n",
    b"Content-Length: \r\n",
    b"Content-Length: +5\r\n",
    b"Content-Length: abc\r\n",
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"Transfer-Encoding: chunked, chunked\r\n",
])
def test_framing_the_parser_refuses_is_handed_over_with_the_headers(framing: bytes) -> None:
    """The parser answers 400 without the body: no reason to wait for one."""
    request = HEAD + framing + b"\r\n" + b"x" * 50
    assert ready_at(request) == len(HEAD + framing + b"\r\n")


def test_a_bad_chunk_size_is_handed_over_at_once() -> None:
    request = HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + b"x" * 50
    assert ready_at(request) == len(HEAD) + len(b"Transfer-Encoding: chunked\r\n\r\nzz\r\n")


def test_a_body_over_the_limit_is_handed_over_without_it() -> None:
    """The app answers 413 from Content-Length alone, or as it reads a chunked body."""
    request = HEAD + b"Content-Length: 2000\r\n\r\n" + b"x" * 2000
    assert ready_at(request, body_limit=1000) == len(HEAD) + len(b"Content-Length: 2000\r\n\r\n")
    chunks = b"".join(b"100\r\n" + b"x" * 256 + b"\r\n" for _ in range(8))
    chunked = HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    assert ready_at(chunked, body_limit=1000, step=1) < len(chunked)


def test_a_header_section_that_never_ends_is_handed_over_past_the_parsers_limit() -> None:
    scanner = RequestScanner(1000, head_limit=4096)
    assert scanner.feed(HEAD + b"X-Pad: " + b"a" * 1000) == NEED_MORE
    assert scanner.feed(HEAD + b"X-Pad: " + b"a" * 5000) == READY  # the parser answers 431


def test_bare_line_feeds_are_the_parsers_call() -> None:
    assert ready_at(b"POST / HTTP/1.1\nHost: h\n\nbody") == len(b"POST / HTTP/1.1\nHost: h\n\n")


def test_expect_continue_is_noticed_so_the_event_loop_can_answer_it() -> None:
    scanner = RequestScanner(1000)
    request = HEAD + b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    assert scanner.feed(request) == NEED_MORE
    assert scanner.head_complete and scanner.expect_continue
    assert scanner.feed(request + b"hello") == READY
    old = RequestScanner(1000)
    old.feed(request.replace(b"HTTP/1.1", b"HTTP/1.0"))
    assert not old.expect_continue  # RFC 9110 10.1.1: ignored in HTTP/1.0


def test_a_dribbled_request_is_never_handed_over_early() -> None:
    body = b'{"a": 1}' * 20
    request = HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body
    seen = decisions(request)
    assert seen[:-1] == [NEED_MORE] * (len(request) - 1) and seen[-1] == READY
