"""HTTP sink: an MJPEG stream, a viewer page and /metrics, all behind a token.

http://HOST:PORT/?token=SECRET | token_file=PATH   (or $OBSCURA_TOKEN), stream=output|capture, quality=1..100

Routes: /  viewer page (a valid ?token= also sets an HttpOnly cookie so the page's own requests
carry it), /stream.mjpg  multipart JPEG stream, /frame.jpg  newest frame, /metrics  JSON (file
paths shortened to their last part). A token is accepted from `Authorization: Bearer` (the scheme
in any case, RFC 7235), `?token=` or the cookie; anything else is 401.
Each client has its own thread and always gets the newest frame: a slow client skips frames,
and after `write_timeout` seconds without progress it is dropped; the pipeline never waits for it.
A client that hangs up is dropped even while no frame comes.

Against one client holding the camera hostage: a connection must send its request within
`read_timeout_s`; at most `max_unauthenticated` connections may wait to be authorised, and a new
one evicts the oldest waiting one (so idle connections cannot lock out a real client); the listen
backlog is 128.
"""

from __future__ import annotations

import collections
import hmac
import json
import logging
import os
import re
import select
import socket
import threading
from http import cookies
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np

from obscura.errors import ObscuraError

log = logging.getLogger("firmware.http")
COOKIE = "obscura_token"
BOUNDARY = "obscura-frame"
VIEWER_PAGE = Path(__file__).with_name("viewer.html")
SEND_BUFFER_BYTES = 128 * 1024
LISTEN_BACKLOG = 128
IDLE_CHECK_S = 0.5
# The directories of an absolute path (not the `//` of a URI scheme): /metrics shows only the last part.
PATH_DIRECTORIES = re.compile(r"(?<!:/)(?:/[^/\s'\"?&]+)+/(?=[^/\s'\"?&])")


class FrameBroadcaster:
    """Holds the newest JPEG and wakes every waiting client when a new one arrives."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._jpeg: bytes | None = None
        self._seq = 0
        self.closed = False

    def publish(self, jpeg: bytes) -> None:
        """Replace the newest frame (O(1); never waits for clients)."""
        with self._cond:
            self._jpeg = jpeg
            self._seq += 1
            self._cond.notify_all()

    def newest(self) -> tuple[bytes | None, int]:
        """The newest frame and its sequence number."""
        with self._cond:
            return self._jpeg, self._seq

    def wait_newer(self, seq: int, timeout_s: float) -> tuple[bytes | None, int]:
        """Wait up to `timeout_s` for a frame newer than `seq`; returns (None, seq) if none came."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq > seq or self.closed, timeout_s)
            if self._seq > seq and not self.closed:
                return self._jpeg, self._seq
            return None, seq

    def close(self) -> None:
        """Wake every client so its loop ends."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()


def resolve_token(options: dict[str, str], uri: str) -> str:
    """The access token from token_file=, token= or $OBSCURA_TOKEN; serving without one is refused."""
    if options.get("token_file"):
        path = Path(options["token_file"])
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as err:
            raise ObscuraError(f"sink {uri}: cannot read token_file {path}: {err.strerror or err}") from None
    else:
        token = options.get("token") or os.environ.get("OBSCURA_TOKEN", "")
    if len(token) < 8:
        raise ObscuraError(
            f"sink {uri}: needs an access token of at least 8 characters (token_file=PATH, token=..., or $OBSCURA_TOKEN)"
        )
    return token


def without_paths(value: Any) -> Any:
    """`value` (JSON data) with every absolute path's directories replaced by '…' (the device's layout stays private)."""
    if isinstance(value, str):
        return PATH_DIRECTORIES.sub("…/", value)
    if isinstance(value, dict):
        return {k: without_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_paths(v) for v in value]
    return value


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that admits at most `max_pending` connections not yet authorised.

    A connection counts as pending from accept until its request proved the token (or it closed);
    when the limit is reached a new connection evicts the oldest pending one (its socket is shut
    down, which ends that handler's read), so idle or half-sent requests cannot starve real clients.
    """

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], handler: type, max_pending: int):
        self.max_pending = max_pending
        self._pending: collections.OrderedDict[socket.socket, None] = collections.OrderedDict()
        self._pending_lock = threading.Lock()
        self.evicted = 0
        super().__init__(address, handler)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Admit every connection, evicting the oldest pending one when the limit is reached."""
        with self._pending_lock:
            self._pending[request] = None
            while len(self._pending) > self.max_pending:
                oldest, _ = self._pending.popitem(last=False)
                self.evicted += 1
                try:
                    oldest.shutdown(socket.SHUT_RDWR)
                except OSError:  # it went away meanwhile
                    pass
        return True

    def settle(self, request: Any) -> None:
        """The connection proved the token (or ended): it no longer counts as pending."""
        with self._pending_lock:
            self._pending.pop(request, None)

    @property
    def pending(self) -> int:
        """Connections accepted and not yet authorised."""
        with self._pending_lock:
            return len(self._pending)


class HttpSink:
    """Serves the stream, the viewer and the metrics; `write` only encodes and publishes one JPEG."""

    allow_raw_frames = False

    def __init__(
        self,
        host: str,
        port: int,
        token: str,
        stream: str = "output",
        quality: int = 80,
        metrics: Callable[[], dict[str, Any]] | None = None,
        max_clients: int = 8,
        write_timeout_s: float = 10.0,
        read_timeout_s: float = 10.0,
        max_unauthenticated: int = 32,
    ):
        if stream not in ("output", "capture"):
            raise ObscuraError(f"http sink: stream={stream!r}; expected 'output' or 'capture'")
        if not 1 <= quality <= 100:
            raise ObscuraError(f"http sink: quality={quality}; expected 1..100")
        self.host, self.port, self.stream, self.quality = host, port, stream, quality
        self._token = token.encode("utf-8")
        self._metrics = metrics or (lambda: {})
        self.max_clients = max_clients
        self.write_timeout_s = write_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_unauthenticated = max_unauthenticated
        self.frames = FrameBroadcaster()
        self.clients = 0
        self._clients_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL the server listens on (after `open`, with the real port)."""
        return f"http://{self.host}:{self.port}"

    def open(self) -> None:
        """Bind and serve in a daemon thread."""
        handler = type("Handler", (_Handler,), {"sink": self, "timeout": self.read_timeout_s})
        try:
            server = _Server((self.host, self.port), handler, self.max_unauthenticated)
        except OSError as err:
            raise ObscuraError(f"http sink: cannot listen on {self.host}:{self.port}: {err.strerror or err}") from None
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="http-sink", daemon=True
        )
        self._thread.start()
        log.info("serving %s (stream=%s)", self.url, self.stream)

    def write(self, image: np.ndarray, index: int) -> None:
        """Encode one RGB frame as JPEG and make it the newest frame."""

        ok, jpeg = cv2.imencode(
            ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, self.quality]
        )
        if not ok:
            raise OSError("JPEG encoding failed")
        self.frames.publish(jpeg.tobytes())

    def close(self) -> None:
        """Stop serving and end every client's stream."""
        self.frames.close()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def authorized(self, header: str | None, query: dict[str, list[str]], cookie_header: str | None) -> str | None:
        """The way the request proved the token ('header', 'query', 'cookie'), or None."""
        candidates = []
        scheme, _, credentials = (header or "").strip().partition(" ")
        if scheme.lower() == "bearer":  # RFC 7235: the scheme is case-insensitive
            candidates.append(("header", credentials.strip()))
        if query.get("token"):
            candidates.append(("query", query["token"][-1]))
        if cookie_header:
            jar = cookies.SimpleCookie()
            try:
                jar.load(cookie_header)
            except cookies.CookieError:
                jar = cookies.SimpleCookie()
            if COOKIE in jar:
                candidates.append(("cookie", jar[COOKIE].value))
        for how, value in candidates:
            if hmac.compare_digest(value.encode("utf-8"), self._token):
                return how
        return None

    def cookie(self) -> str:
        """The Set-Cookie value that lets the viewer page's own requests carry the token."""
        return f"{COOKIE}={self._token.decode('utf-8')}; Path=/; HttpOnly; SameSite=Strict"

    def client_joined(self) -> bool:
        """Count a new stream client; False when the limit is reached."""
        with self._clients_lock:
            if self.clients >= self.max_clients:
                return False
            self.clients += 1
            return True

    def client_left(self) -> None:
        """A stream client went away."""
        with self._clients_lock:
            self.clients -= 1

    def settle(self, request: Any) -> None:
        """Tell the server a connection proved the token or ended."""
        server = self._server
        if server is not None:
            server.settle(request)

    def metrics(self) -> dict[str, Any]:
        """The pipeline's metrics plus this server's connection counts, without the device's file paths."""
        server = self._server
        connections = {
            "http_clients": self.clients,
            "http_pending": server.pending if server else 0,
            "http_evicted": server.evicted if server else 0,
        }
        return without_paths({**self._metrics(), **connections})


class _Handler(BaseHTTPRequestHandler):
    """One HTTP request; `sink` is set on a per-server subclass."""

    sink: HttpSink
    protocol_version = "HTTP/1.1"
    server_version = "obscura"
    sys_version = ""

    def finish(self) -> None:
        """The connection ends: it no longer counts as pending."""
        self.sink.settle(self.request)
        super().finish()

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        """Route, after checking the token."""
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        how = self.sink.authorized(self.headers.get("Authorization"), query, self.headers.get("Cookie"))
        if how is None:
            self._send(
                401,
                b"401 unauthorized: a valid token is required\n",
                "text/plain; charset=utf-8",
                {"WWW-Authenticate": 'Bearer realm="obscura"'},
            )
            return
        self.sink.settle(self.request)  # a proven client no longer counts against the waiting connections
        routes = {
            "/": self._viewer,
            "/index.html": self._viewer,
            "/stream.mjpg": self._stream,
            "/frame.jpg": self._frame,
            "/metrics": self._metrics,
        }
        route = routes.get(parts.path)
        if route is None:
            self._send(404, b"404 not found\n", "text/plain; charset=utf-8")
            return
        route(how)

    def _viewer(self, how: str) -> None:
        """The viewer page; a token given in the URL becomes a cookie for the page's own requests."""
        extra = {"Set-Cookie": self.sink.cookie()} if how == "query" else {}
        self._send(200, VIEWER_PAGE.read_bytes(), "text/html; charset=utf-8", extra)

    def _frame(self, how: str) -> None:
        """The newest JPEG, or 503 before the first frame."""
        jpeg, _ = self.sink.frames.newest()
        if jpeg is None:
            self._send(503, b"503 no frame yet\n", "text/plain; charset=utf-8", {"Retry-After": "1"})
        else:
            self._send(200, jpeg, "image/jpeg")

    def _metrics(self, how: str) -> None:
        """The metrics as JSON."""
        body = json.dumps(self.sink.metrics(), sort_keys=True).encode("utf-8")
        self._send(200, body, "application/json")

    def _stream(self, how: str) -> None:
        """multipart/x-mixed-replace JPEG stream: always the newest frame, until the client or server goes."""
        sink = self.sink
        if not sink.client_joined():
            self._send(503, b"503 too many clients\n", "text/plain; charset=utf-8", {"Retry-After": "5"})
            return
        try:
            self.connection.settimeout(sink.write_timeout_s)
            # A small kernel send buffer: a client that lags holds a few frames in flight, not seconds of stale
            # video, and one that stops reading is found (and dropped) within `write_timeout_s`.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            seq = 0
            while not sink.frames.closed:
                jpeg, seq = sink.frames.wait_newer(seq, IDLE_CHECK_S)
                if jpeg is None:
                    if self._hung_up():
                        break
                    continue
                head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                self.wfile.write(head.encode("ascii") + jpeg + b"\r\n")
                self.wfile.flush()
        except (OSError, ValueError) as err:  # disconnects, timeouts of a client that stopped reading
            log.debug("stream client %s left: %s", self.client_address, err)
        finally:
            sink.client_left()

    def _hung_up(self) -> bool:
        """Whether the client closed its end (seen without waiting; while frames flow, a failed write says so)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            # Readable with nothing to read is the end of the stream (a client may also send bytes: still there).
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        """A complete response with a body."""
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)
        except OSError as err:
            log.debug("client %s left: %s", self.client_address, err)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        """Access log at debug level, without query strings (they may hold the token)."""
        log.debug("%s %s", self.client_address[0], (format % args).split("?")[0])
