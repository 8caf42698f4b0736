"""HTTP sink: an MJPEG stream, a viewer page and /metrics, all behind a token.

http://HOST:PORT/?token=SECRET | token_file=PATH   (or $OBSCURA_TOKEN), stream=output|capture, quality=1..100

Routes: /  viewer page (a valid ?token= also sets an HttpOnly cookie so the page's own requests
carry it), /stream.mjpg  multipart JPEG stream, /frame.jpg  newest frame, /metrics  JSON.
A token is accepted from `Authorization: Bearer`, `?token=` or the cookie; anything else is 401.
Each client has its own thread and always gets the newest frame: a slow client skips frames,
and after `write_timeout` seconds without progress it is dropped; the pipeline never waits for it.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
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


class HttpSink:
    """Serves the stream, the viewer and the metrics; `write` only encodes and publishes one JPEG."""

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
        self.frames = FrameBroadcaster()
        self.clients = 0
        self._clients_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL the server listens on (after `open`, with the real port)."""
        return f"http://{self.host}:{self.port}"

    def open(self) -> None:
        """Bind and serve in a daemon thread."""
        handler = type("Handler", (_Handler,), {"sink": self})
        try:
            server = ThreadingHTTPServer((self.host, self.port), handler)
        except OSError as err:
            raise ObscuraError(f"http sink: cannot listen on {self.host}:{self.port}: {err.strerror or err}") from None
        server.daemon_threads = True
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
        if header and header.startswith("Bearer "):
            candidates.append(("header", header[len("Bearer ") :].strip()))
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

    def metrics(self) -> dict[str, Any]:
        """The pipeline's metrics plus this server's client count."""
        return {**self._metrics(), "http_clients": self.clients}


class _Handler(BaseHTTPRequestHandler):
    """One HTTP request; `sink` is set on a per-server subclass."""

    sink: HttpSink
    protocol_version = "HTTP/1.1"
    server_version = "obscura"
    sys_version = ""

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
                jpeg, seq = sink.frames.wait_newer(seq, 1.0)
                if jpeg is None:
                    continue
                head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                self.wfile.write(head.encode("ascii") + jpeg + b"\r\n")
                self.wfile.flush()
        except (OSError, ValueError) as err:  # disconnects, timeouts of a client that stopped reading
            log.debug("stream client %s left: %s", self.client_address, err)
        finally:
            sink.client_left()

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
