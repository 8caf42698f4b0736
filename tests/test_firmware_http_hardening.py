"""The stream server under hostile use: idle and half-sent connections cannot take the camera or its clients down."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_firmware_http import TOKEN, _get, _pattern, _read_mjpeg_frames
from test_firmware_pipeline import ScriptedSource, wait_until

from deploy.flash import render_unit
from firmware.bundle_reader import BundleConfig
from firmware.http_sink import LISTEN_BACKLOG, HttpSink
from firmware.pipeline import Pipeline
from firmware.stream_metrics import Metrics
from obscura.paths import REPO_ROOT

IDLE_CONNECTIONS = 1500
SERVER_FD_LIMIT = 1024  # systemd's default soft limit, the one the flood exhausted


def _idle(port: int, partial: bytes = b"") -> socket.socket:
    """A connection that sends at most part of a request and then nothing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if partial:
        sock.sendall(partial)
    return sock


def _closed_by_server(sock: socket.socket, wait_s: float) -> bool:
    """Whether the server ended this connection within `wait_s` seconds."""
    sock.settimeout(wait_s)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def _served(**sink_options) -> tuple[Pipeline, HttpSink]:
    metrics = Metrics("test://frames")
    sink = HttpSink("127.0.0.1", 0, TOKEN, metrics=metrics.snapshot, **sink_options)
    pipe = Pipeline(lambda: ScriptedSource("frames", _pattern()), [sink], metrics=metrics)
    return pipe.start(), sink


def test_a_connection_that_never_finishes_its_request_is_closed_after_the_read_timeout() -> None:
    pipe, sink = _served(read_timeout_s=0.5)
    try:
        silent = _idle(sink.port)
        half = _idle(sink.port, b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n")  # headers never end
        assert _closed_by_server(silent, 10) and _closed_by_server(half, 10)
        wait_until(lambda: sink.metrics()["http_pending"] == 0)
    finally:
        pipe.stop()


def test_waiting_connections_are_capped_and_the_oldest_evicted_so_a_real_client_gets_in() -> None:
    pipe, sink = _served(max_unauthenticated=4)
    try:
        idle = [_idle(sink.port, b"GET / HTTP/1.1\r\n") for _ in range(10)]
        wait_until(lambda: sink.metrics()["http_evicted"] >= 6)
        assert sink.metrics()["http_pending"] <= 4
        assert all(_closed_by_server(sock, 5) for sock in idle[:6])  # the six oldest were shut
        assert not any(_closed_by_server(sock, 0.05) for sock in idle[6:])  # the newest four still wait
        wait_until(lambda: sink.frames.newest()[0] is not None)
        assert _get(sink.url + "/frame.jpg", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
        for sock in idle:
            sock.close()
    finally:
        pipe.stop()


def test_the_stream_binds_loopback_by_default_with_a_real_backlog_and_the_unit_drops_root() -> None:
    assert all(uri.startswith("http://127.0.0.1:") for uri in BundleConfig().sinks)
    assert LISTEN_BACKLOG > 5
    unit = dict(
        line.split("=", 1) for line in render_unit("/opt/obscura", "/usr/bin/python3").splitlines() if "=" in line
    )
    assert unit["User"] not in ("root", "0", "") and unit["Group"] not in ("root", "0", "")
    assert int(unit["LimitNOFILE"]) >= 4096
    assert unit["ProtectSystem"] == "strict" and unit["NoNewPrivileges"] == "true"
    assert "--public-key /opt/obscura/trusted-key.pub" in unit["ExecStart"]


def _raise_fd_limit(needed: int) -> None:
    """Raise this process's soft RLIMIT_NOFILE to `needed` (the hard limit allowing), or skip the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"needs {needed} open files; the hard RLIMIT_NOFILE here is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _server_fd_limit() -> None:
    """In the server's child process: the soft limit systemd gives a unit without LimitNOFILE."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (SERVER_FD_LIMIT, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_an_authorised_viewer_keeps_its_stream_while_1500_idle_connections_are_open(tmp_path: Path) -> None:
    """The firmware as a process (1024 open files, as under systemd's default) against a flood of idle connections."""
    _raise_fd_limit(IDLE_CONNECTIONS + 512)
    (tmp_path / "clean").mkdir()
    cv2.imwrite(str(tmp_path / "clean" / "0.png"), _pattern((96, 96)))
    np.save(tmp_path / "psf.npy", np.ones((3, 3, 3), np.float32) / 9)
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "firmware",
        "run",
        "--source",
        f"sim://{tmp_path / 'clean'}?psf={tmp_path / 'psf.npy'}&fps=30",
        "--sink",
        f"http://127.0.0.1:{port}/?token={TOKEN}",
        "--duration",
        "120",
        "--log-level",
        "error",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_server_fd_limit
    )
    url = f"http://127.0.0.1:{port}"
    idle: list[socket.socket] = []
    try:
        wait_until(lambda: server.poll() is None and _status(url + "/frame.jpg") == 200, timeout_s=60)
        viewer = _open_stream_to(port)
        _read_mjpeg_frames(viewer, 3)
        for i in range(IDLE_CONNECTIONS):
            idle.append(_idle(port, b"GET / HTTP/1.1\r\n" if i % 2 else b""))
        frames_during_flood = _read_mjpeg_frames(viewer, 20)  # the viewer connected before the flood streams on
        assert frames_during_flood[-1].shape == (96, 96, 3)
        assert _status(url + "/frame.jpg") == 200  # a new authorised request gets in while the flood is open
        metrics = json.loads(_body(url + "/metrics"))
        # The one-image folder loops (ends, restarts); what must not happen is a source error such as EMFILE.
        assert metrics["source"]["errors"] == 0 and metrics["source"]["last_error"] in (None, "ended: source ended")
        assert metrics["http_pending"] <= 32 and metrics["http_evicted"] >= IDLE_CONNECTIONS - 32
        viewer.close()
    finally:
        for sock in idle:
            sock.close()
        server.terminate()
        _, stderr = server.communicate(timeout=60)
    assert b"Too many open files" not in stderr, stderr[-2000:]


def _open_stream_to(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
    return sock


def _status(url: str) -> int:
    """The status of an authorised GET, or 0 while nothing listens yet."""
    try:
        return _get(url, {"Authorization": f"Bearer {TOKEN}"})[0]
    except OSError:
        return 0


def _body(url: str) -> bytes:
    return _get(url, {"Authorization": f"Bearer {TOKEN}"})[1]
