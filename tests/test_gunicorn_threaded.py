"""tests/test_gunicorn.py's scenarios with the threaded worker, receiver.gunicorn_worker: the
worker `herald serve` runs the receiver with, and `web`'s with
HERALD_WORKER_CLASS=receiver.gunicorn_worker.HeraldThreadWorker. Two threads, so that two slow
clients would be enough to starve it if a waiting client held a thread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_gunicorn import (  # noqa: F401 - collected here again, with this module's `server`
    Server,
    run_web,
    test_a_body_left_unread_after_an_answer_holds_no_thread,
    test_a_broken_chunked_body_is_answered_with_connection_close,
    test_a_client_that_never_closes_does_not_stall_the_worker,
    test_a_pipelined_request_left_half_sent_is_cut_off_at_the_deadline,
    test_body_dribbler_is_cut_off_within_the_read_timeout,
    test_connections_that_send_nothing_hold_no_thread,
    test_expect_continue_is_answered_once_and_the_body_then_accepted,
    test_header_dribblers_are_cut_off_and_a_delivery_still_gets_through,
    test_pipelined_and_kept_alive_requests_are_each_answered_in_order,
    test_refused_framing_is_a_json_400_that_closes_the_connection,
    test_sigterm_lets_a_delivery_in_flight_finish_then_the_server_exits,
)


@pytest.fixture
def server(tmp_path: Path, repo) -> Iterator[Server]:
    yield from run_web(tmp_path, repo, HERALD_WORKER_CLASS="receiver.gunicorn_worker.HeraldThreadWorker")


def test_the_threaded_worker_serves(server: Server) -> None:
    status, _ = server.deliver()
    assert status == 202
    assert "Using worker: receiver.gunicorn_worker.HeraldThreadWorker" in server.log.read_text()
