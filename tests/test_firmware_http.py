"""The HTTP sink: token auth, MJPEG stream, /metrics, disconnects, slow clients, the viewer in Chromium."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_firmware_pipeline import ScriptedSource, wait_until

from firmware.http_sink import BOUNDARY, HttpSink
from firmware.pipeline import Pipeline
from firmware.sinks import build_sink
from firmware.sources import open_source
from firmware.stream_metrics import Metrics
from obscura.errors import ObscuraError

TOKEN = "s3cret-token-123"


def _pattern(shape=(64, 64)) -> np.ndarray:
    """A frame a person can recognise in a screenshot: red left half, blue right half, a green bar."""
    frame = np.zeros((*shape, 3), np.uint8)
    frame[:, : shape[1] // 2] = (220, 30, 30)
    frame[:, shape[1] // 2 :] = (30, 30, 220)
    frame[shape[0] // 2 - 4 : shape[0] // 2 + 4] = (30, 200, 30)
    return frame


@pytest.fixture()
def served():
    """A pipeline from a scripted camera to an HTTP sink on 127.0.0.1 (ephemeral port)."""
    metrics = Metrics("test://frames")
    sink = HttpSink("127.0.0.1", 0, TOKEN, metrics=metrics.snapshot, write_timeout_s=2.0)
    pipe = Pipeline(lambda: ScriptedSource("frames", _pattern()), [sink], metrics=metrics)
    pipe.start()
    yield pipe, sink
    pipe.stop()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def _read_mjpeg_frames(sock: socket.socket, n: int) -> list[np.ndarray]:
    """Read `n` JPEG parts from an open multipart stream socket."""
    buf = b""
    frames = []
    deadline = time.monotonic() + 20
    while len(frames) < n and time.monotonic() < deadline:
        buf += sock.recv(65536)
        while True:
            start = buf.find(f"--{BOUNDARY}\r\n".encode())
            head_end = buf.find(b"\r\n\r\n", start)
            if start < 0 or head_end < 0:
                break
            length = int(
                [line for line in buf[start:head_end].split(b"\r\n") if line.lower().startswith(b"content-length")][
                    0
                ].split(b":")[1]
            )
            body_start = head_end + 4
            if len(buf) < body_start + length:
                break
            frames.append(
                cv2.imdecode(np.frombuffer(buf[body_start : body_start + length], np.uint8), cv2.IMREAD_COLOR)
            )
            buf = buf[body_start + length :]
    assert len(frames) >= n, f"got {len(frames)} of {n} frames"
    return frames


def _open_stream(sink: HttpSink, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", sink.port))
    sock.sendall(f"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
    return sock


@pytest.mark.parametrize("path", ["/", "/stream.mjpg", "/frame.jpg", "/metrics"])
def test_no_token_or_a_wrong_token_is_401(served, path: str) -> None:
    _, sink = served
    assert _get(sink.url + path)[0] == 401
    assert _get(sink.url + path + "?token=wrong-token-xyz")[0] == 401
    status, _, headers = _get(sink.url + path, {"Authorization": "Bearer wrong-token-xyz"})
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert _get(sink.url + path, {"Cookie": "obscura_token=nope"})[0] == 401


def test_viewer_page_sets_a_cookie_that_then_authorises_frames_and_metrics(served) -> None:
    _, sink = served
    status, body, headers = _get(f"{sink.url}/?token={TOKEN}")
    assert status == 200 and b'src="stream.mjpg"' in body
    cookie = headers["Set-Cookie"].split(";")[0]
    assert "HttpOnly" in headers["Set-Cookie"] and cookie == f"obscura_token={TOKEN}"
    wait_until(lambda: _get(sink.url + "/frame.jpg", {"Cookie": cookie})[0] == 200)
    status, jpeg, _ = _get(sink.url + "/frame.jpg", {"Cookie": cookie})
    image = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.abs(image.astype(int) - _pattern()).mean() < 6
    status, body, _ = _get(sink.url + "/metrics", {"Authorization": f"Bearer {TOKEN}"})
    metrics = json.loads(body)
    assert status == 200
    assert {"fps", "latency_ms", "drops", "source", "frames", "http_clients"} <= set(metrics)
    assert metrics["source"]["state"] == "running" and "regressor_in" in metrics["drops"]


def test_stream_survives_client_disconnects(served) -> None:
    pipe, sink = served
    for _ in range(3):
        sock = _open_stream(sink)
        frames = _read_mjpeg_frames(sock, 2)
        sock.close()  # abrupt: mid-stream
        assert frames[0].shape == (64, 64, 3)
    wait_until(lambda: sink.clients == 0)
    sock = _open_stream(sink)
    assert len(_read_mjpeg_frames(sock, 3)) == 3
    sock.close()
    assert pipe.metrics.snapshot()["frames"].get("sink_HttpSink_errors", 0) == 0


def test_a_client_that_stops_reading_slows_nobody(served) -> None:
    pipe, sink = served
    stuck = _open_stream(sink, rcvbuf=4096)  # never reads: its socket buffers fill up
    wait_until(lambda: sink.clients == 1)
    before = pipe.metrics.snapshot()["frames"]["captured"]
    reader = _open_stream(sink)
    assert len(_read_mjpeg_frames(reader, 20)) == 20
    wait_until(lambda: pipe.metrics.snapshot()["frames"]["captured"] >= before + 100)
    reader.close()
    wait_until(lambda: sink.clients == 0)  # the stuck client timed out and was dropped
    stuck.close()


def test_sink_uri_needs_a_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OBSCURA_TOKEN", raising=False)
    with pytest.raises(ObscuraError, match="access token"):
        build_sink("http://127.0.0.1:0/")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    sink = build_sink(f"http://127.0.0.1:0/?token_file={token_file}&stream=capture")
    assert sink.stream == "capture" and sink.authorized(f"Bearer {TOKEN}", {}, None) == "header"
    with pytest.raises(ObscuraError, match="stream='clean'"):
        build_sink(f"http://127.0.0.1:0/?token={TOKEN}&stream=clean")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian package: chromium)")
def test_viewer_page_shows_the_stream_in_headless_chromium(served, tmp_path: Path) -> None:
    _, sink = served
    wait_until(lambda: sink.frames.newest()[0] is not None)
    shot = tmp_path / "viewer.png"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=900,640",
        "--virtual-time-budget=3000",
        f"--screenshot={shot}",
        f"{sink.url}/?token={TOKEN}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert shot.is_file(), result.stderr[-2000:]
    image = cv2.cvtColor(cv2.imread(str(shot)), cv2.COLOR_BGR2RGB).astype(int)
    red = (image[..., 0] > 180) & (image[..., 1] < 80) & (image[..., 2] < 80)
    blue = (image[..., 2] > 180) & (image[..., 0] < 80) & (image[..., 1] < 80)
    green = (image[..., 1] > 160) & (image[..., 0] < 80) & (image[..., 2] < 80)
    # The 64 x 64 frame is shown 512 px wide: each half is about 256 x 512 px on screen.
    assert red.sum() > 50_000 and blue.sum() > 50_000 and green.sum() > 10_000
    ys, xs = np.nonzero(red)
    assert xs.mean() < np.nonzero(blue)[1].mean()  # red on the left, as in the frame


def test_a_connected_viewer_keeps_streaming_across_a_source_stall() -> None:
    made: list[ScriptedSource] = []

    def factory() -> ScriptedSource:  # the first camera session stalls after 5 frames, the next ones work
        made.append(ScriptedSource("stall" if not made else "frames", _pattern(), frames_before_fault=5))
        return made[-1]

    metrics = Metrics("test://stall-once")
    sink = HttpSink("127.0.0.1", 0, TOKEN, metrics=metrics.snapshot)
    with Pipeline(factory, [sink], metrics=metrics, stall_timeout_s=0.5):
        sock = _open_stream(sink)
        wait_until(lambda: metrics.snapshot()["source"]["stalls"] == 1)
        _, frames_before_stall = sink.frames.newest()
        frames = _read_mjpeg_frames(sock, frames_before_stall + 10)  # each frame is sent at most once per client
        sock.close()
        status, body, _ = _get(sink.url + "/metrics", {"Authorization": f"Bearer {TOKEN}"})
    assert len(frames) >= 15  # only 5 frames existed before the stall: the rest came after the restart
    source = json.loads(body)["source"]
    assert source["stalls"] == 1 and source["last_error"].startswith("stalled: no frame for")
    assert source["state"] == "running" and source["restarts"] == 1


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer", "bEaReR"])
def test_the_bearer_scheme_is_accepted_in_any_case(served, scheme: str) -> None:
    _, sink = served
    assert _get(sink.url + "/metrics", {"Authorization": f"{scheme} {TOKEN}"})[0] == 200
    assert _get(sink.url + "/metrics", {"Authorization": f"{scheme} wrong-token-xyz"})[0] == 401
    assert _get(sink.url + "/metrics", {"Authorization": f"Basic {TOKEN}"})[0] == 401


def test_metrics_do_not_show_the_device_file_paths(tmp_path: Path) -> None:
    folder = tmp_path / "secret-site" / "clean"
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "0.png"), _pattern())
    np.save(tmp_path / "psf.npy", np.ones((3, 3, 3), np.float32) / 9)
    uri = f"sim://{folder}?psf={tmp_path / 'psf.npy'}&fps=50"
    metrics = Metrics(uri)
    sink = HttpSink("127.0.0.1", 0, TOKEN, metrics=metrics.snapshot)
    with Pipeline(lambda: open_source(uri), [sink], metrics=metrics):
        wait_until(lambda: metrics.snapshot()["source"]["ends"] >= 1)  # a last_error that names the source too
        body = _get(sink.url + "/metrics", {"Authorization": f"Bearer {TOKEN}"})[1].decode()
    assert str(tmp_path) not in body and "secret-site" not in body
    assert json.loads(body)["source"]["uri"] == "sim://…/clean?psf=…/psf.npy&fps=50"


def test_clients_that_hang_up_are_dropped_even_while_no_frame_comes() -> None:
    metrics = Metrics("test://stall")
    sink = HttpSink("127.0.0.1", 0, TOKEN, metrics=metrics.snapshot, max_clients=2)
    source = ScriptedSource("stall", _pattern(), frames_before_fault=2)  # two frames, then a camera that hangs
    with Pipeline(lambda: source, [sink], metrics=metrics, stall_timeout_s=60):
        wait_until(lambda: sink.frames.newest()[0] is not None)
        for _ in range(3):  # more than max_clients: each must have been dropped for the next to get in
            sock = _open_stream(sink)
            assert sock.recv(12).startswith(b"HTTP/1.1 200")
            sock.close()
            wait_until(lambda: sink.clients == 0, timeout_s=5)
