"""The hot-path POST client against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gateway.messaging.posting import Poster, PostFailed


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    connections: set[int] = set()
    release = threading.Event()  # lets /slow answer, once its client has given up

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Handler.connections.add(id(self.connection))
        if self.path == "/slow":
            _Handler.release.wait(10)
        if self.path == "/close":
            # Closes the connection after answering without saying so (no Connection: close),
            # as a server restarting or timing out an idle connection does.
            self.close_connection = True
        status = 202 if self.path != "/refuse" else 400
        answer = b"echo:" + body + b":" + self.headers["Content-Type"].encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    closed = threading.Event()  # a connection was closed on the server's side

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the client that timed out closed its end: expected here

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        super().shutdown_request(request)
        _Server.closed.set()


@pytest.fixture
def server() -> Iterator[str]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Handler.connections = set()
    _Handler.release, _Server.closed = threading.Event(), threading.Event()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_answers_status_and_body_on_kept_connections(server: str) -> None:
    poster = Poster(timeout=5, max_connections=4)
    try:
        answer = poster.post(server + "/ok", b"<x/>", {"Content-Type": "application/xml"})
        assert answer.status_code == 202 and answer.text == "echo:<x/>:application/xml"
        refused = poster.post(server + "/refuse", b"{}", {"Content-Type": "application/json"})
        assert refused.status_code == 400 and refused.content.startswith(b"echo:{}")
        with ThreadPoolExecutor(max_workers=4) as pool:
            codes = list(
                pool.map(
                    lambda i: poster.post(server + "/ok", str(i).encode(), {"Content-Type": "t"}),
                    range(40),
                )
            )
        assert {c.status_code for c in codes} == {202}
        assert len(_Handler.connections) <= 4 + 1  # connections are reused, not one per post
    finally:
        poster.close()


def test_no_answer_is_post_failed(server: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # nothing listens once closed
    poster = Poster(timeout=0.3, max_connections=1)
    with pytest.raises(PostFailed):
        poster.post(f"http://127.0.0.1:{closed_port}/x", b"", {})
    with pytest.raises(PostFailed):
        poster.post(server + "/slow", b"", {"Content-Type": "t"})  # read timeout
    _Handler.release.set()
    with pytest.raises(PostFailed):
        poster.post("http://[not-a-host/x", b"", {})
    assert poster.post(server + "/ok", b"", {"Content-Type": "t"}).status_code == 202


def test_body_bytes_arrive_exactly_whatever_their_size_or_content(server: str) -> None:
    poster = Poster(timeout=5, max_connections=1)
    try:
        for body in (b"", b"\x00<a>\x00</a>\xff", bytes(range(256)) * 64):  # up to 16 KiB
            answer = poster.post(server + "/ok", body, {"Content-Type": "application/xml"})
            assert answer.status_code == 202
            assert answer.content == b"echo:" + body + b":application/xml"
    finally:
        poster.close()


def test_a_connection_the_server_closed_is_not_reused(server: str) -> None:
    poster = Poster(timeout=5, max_connections=1)
    try:
        assert poster.post(server + "/close", b"1", {"Content-Type": "t"}).status_code == 202
        assert _Server.closed.wait(10)  # the server closed its end
        assert poster.post(server + "/ok", b"2", {"Content-Type": "t"}).content == b"echo:2:t"
    finally:
        poster.close()


def test_a_closed_poster_still_posts_but_keeps_no_connection(server: str) -> None:
    poster = Poster(timeout=5, max_connections=1)
    poster.close()
    assert poster.post(server + "/ok", b"x", {"Content-Type": "t"}).status_code == 202
    assert poster._idle == []
