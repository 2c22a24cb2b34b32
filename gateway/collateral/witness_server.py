"""``dt-gateway witness``: a C2SP tlog-witness server that anyone can run beside the logs it
follows.

    dt-gateway witness --port 7380 --log '<origin>+<id>+<base64>' [--log ...]
        [--host 127.0.0.1] [--data var/witness] [--key PRIVATE+KEY+...|FILE] [--name NAME]

Routes (tlog-witness, the submission and monitoring prefixes both the server's root):

- ``POST /add-checkpoint``: the old size, a consistency proof and a checkpoint; answers the
  witness's ``cosignature/v1`` line, or a refusal (:mod:`gateway.collateral.witness`);
- ``GET /<hex SHA-256 of the origin>/checkpoint``: the last checkpoint cosigned for that log,
  with the log's signature and the cosignature (404 before the first);
- ``GET /``: the witness's name, verifier key and the logs it follows, as text.

The server is the standard library's threaded HTTP server with HTTP/1.1 keep-alive: a witness
answers a few requests per checkpoint of each log it follows. Each connection has a socket
timeout, bodies a size limit, and at most :data:`MAX_CONNECTIONS` connections are served at
once (further ones are closed at once), so slow or many clients cannot exhaust it.

Without ``--key`` a development key is made once in the data directory (``witness.key``, mode
0600) and kept; the verifier key is printed at start (one JSON line) in every case. The state is
``witness.db`` in the data directory (see :class:`gateway.collateral.witness.WitnessState`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from gateway.collateral import note
from gateway.collateral.witness import (
    MAX_REQUEST_SIZE,
    Refused,
    Witness,
    WitnessState,
)

__all__ = [
    "DISCARD_LIMIT",
    "MAX_CONNECTIONS",
    "WitnessServer",
    "add_arguments",
    "load_cosigner",
    "main",
    "run",
    "serving",
]

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 64

DISCARD_LIMIT = 8 << 20
"""The most of a too-large body read (and dropped) before the 413 answer."""
SOCKET_TIMEOUT = 15.0
"""Seconds a connection may stay silent (while sending its request, or idle between two)."""
KEY_FILE = "witness.key"
STATE_FILE = "witness.db"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "dt-gateway-witness"
    sys_version = ""
    timeout = SOCKET_TIMEOUT
    server: WitnessServer

    def _answer(
        self, status: int, body: str, content_type: str = "text/plain; charset=utf-8"
    ) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        if self.close_connection:  # said, so that a client does not send its next request here
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_POST(self) -> None:
        if self.path != "/add-checkpoint":
            self.close_connection = True  # its body is not read
            self._answer(404, "not found\n")
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            self._answer(411, "a Content-Length is required\n")
            return
        if int(length) > MAX_REQUEST_SIZE:
            self.close_connection = True
            self._discard(int(length))
            self._answer(413, f"the body is larger than {MAX_REQUEST_SIZE} bytes\n")
            return
        body = self.rfile.read(int(length))
        if len(body) != int(length):
            self.close_connection = True
            return
        try:
            line = self.server.witness.add_checkpoint(body)
        except Refused as refusal:
            if refusal.status != 409:  # 409 is how a client learns the size: not news
                log.info("add-checkpoint refused (%d): %s", refusal.status, refusal.reason)
            self._answer(refusal.status, refusal.body, refusal.content_type)
            return
        except Exception:  # the state could not be read or written: nothing was cosigned
            log.exception("add-checkpoint failed")
            self.close_connection = True
            self._answer(500, "the witness could not record the checkpoint\n")
            return
        self._answer(200, line)

    def _discard(self, length: int) -> None:
        """Read and drop up to :data:`DISCARD_LIMIT` bytes of a body refused for its size:
        closing a socket with unread data resets the connection, and the client would lose
        the answer with it. A longer body is cut off (the read timeout bounds a slow one)."""
        left = min(length, DISCARD_LIMIT)
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                return
            left -= len(chunk)

    def do_GET(self) -> None:
        if self.headers.get("Content-Length", "0") != "0":
            self.close_connection = True  # a body nobody reads would be the next request
        if self.path == "/":
            w = self.server.witness
            logs = "".join(f"log {key.vkey()}\n" for keys in w.logs.values() for key in keys)
            self._answer(200, f"witness {w.name}\nvkey {w.vkey()}\n{logs}")
            return
        parts = self.path.split("/")
        if len(parts) == 3 and parts[0] == "" and parts[2] == "checkpoint":
            found = self.server.witness.checkpoint(parts[1])
            if found is not None:
                self._answer(200, found)
                return
        self._answer(404, "not found\n")

    do_HEAD = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class WitnessServer(ThreadingHTTPServer):
    """The witness over HTTP; serves at most :data:`MAX_CONNECTIONS` connections at once."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, witness: Witness, host: str, port: int) -> None:
        self.witness = witness
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = str(host)
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


@contextmanager
def serving(witness: Witness, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """The witness served from a thread of this process while the block runs; yields its URL."""
    server = WitnessServer(witness, host, port)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def load_cosigner(key: str | None, data: Path, name: str) -> note.Cosigner:
    """The witness key: ``key`` (a ``PRIVATE+KEY+...`` string, or a file holding one), else
    the development key in ``data``, made once under ``name``."""
    path = data / KEY_FILE
    if key is not None:
        skey = key if key.startswith("PRIVATE+KEY+") else Path(key).read_text().strip()
    elif path.exists():
        skey = path.read_text().strip()
    else:
        skey = note.Signer.generate(name).skey()
        _write_private(path, skey + "\n")
    signer = note.Signer.from_skey(skey)  # the same encoding serves both signature types
    return note.Cosigner(signer.name, signer.private_key)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--data", type=Path, default=Path("var/witness"), help="where the state (and dev key) live"
    )
    parser.add_argument(
        "--key",
        metavar="SKEY",
        help="the witness's private key, PRIVATE+KEY+<name>+<id>+<base64>, or a file holding it"
        " (default: a development key made once in --data)",
    )
    parser.add_argument(
        "--name",
        default=f"{socket.gethostname()}/dt-witness",
        help="the development key's name (a schema-less URL naming this witness)",
    )
    parser.add_argument(
        "--log",
        action="append",
        required=True,
        metavar="VKEY",
        help="a log to witness: its verifier key, <origin>+<id>+<base64> (repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    """Serves until SIGTERM or SIGINT; 2 for bad arguments."""
    try:
        logs = [note.Verifier.from_vkey(v) for v in args.log]
        args.data.mkdir(parents=True, exist_ok=True)
        cosigner = load_cosigner(args.key, args.data, args.name)
        witness = Witness(cosigner, logs, WitnessState(args.data / STATE_FILE))
    except (note.NoteError, ValueError, OSError) as exc:
        print(f"dt-gateway witness: {exc}", file=sys.stderr)
        return 2
    server = WitnessServer(witness, args.host, args.port)
    print(
        json.dumps(
            {
                "witness": witness.name,
                "vkey": witness.vkey(),
                "url": server.url,
                "logs": sorted(witness.logs),
                "data": str(args.data),
            }
        ),
        flush=True,
    )

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        witness.state.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.collateral.witness_server",
        description="A C2SP tlog-witness for transparency logs such as the collateral log.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sys.exit(main())
