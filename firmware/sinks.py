"""Sinks by URI: where de-identified frames (or, on request, the optical capture) leave the device.

http://HOST:PORT/?token_file=PATH    MJPEG stream, viewer page and /metrics (see firmware.http_sink)
file://OUT.mp4 | OUT.avi | FOLDER    a video file (OpenCV/FFmpeg) or numbered PNG images
rtp://HOST:PORT                      H.264 over RTP/UDP      } need an OpenCV built with GStreamer
rtsp://HOST:PORT/PATH                H.264 pushed to an RTSP server (rtspclientsink) }

Every sink takes `stream=output` (default, the de-identified frame) or `stream=capture` (the optical
capture), and `allow_raw_frames=true|false` (default false). Without it a sink receives only
de-identified frames or captures the firmware imaged through the optic itself (sim://): a camera's
frame without a trained anonymizer is withheld (firmware.pipeline). The clean frame of sim:// never
leaves its source. A file sink never overwrites an earlier run's frames or video.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from firmware.http_sink import HttpSink, resolve_token
from firmware.sources import SourceUri, opencv_has_gstreamer, parse_uri
from obscura.atomic import writable_folder
from obscura.errors import ObscuraError

log = logging.getLogger("firmware.sinks")
SINK_SCHEMES = ("http", "file", "rtp", "rtsp")
VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
FRAME_NAME = re.compile(r"^frame_(\d+)\.png$")


def _stream(parsed: SourceUri) -> str:
    """The stream= option, checked."""
    stream = parsed.options.get("stream", "output")
    if stream not in ("output", "capture"):
        raise ObscuraError(f"sink {parsed.text}: stream={stream!r}; expected 'output' or 'capture'")
    return stream


def _allow_raw_frames(parsed: SourceUri) -> bool:
    """The allow_raw_frames= option, checked: only an explicit 'true' lets raw frames out."""
    value = parsed.options.get("allow_raw_frames", "false").lower()
    if value not in ("true", "false"):
        raise ObscuraError(f"sink {parsed.text}: allow_raw_frames={value!r}; expected 'true' or 'false'")
    return value == "true"


def build_sink(uri: str, metrics: Callable[[], dict[str, Any]] | None = None) -> Any:
    """Build (not yet open) the sink named by `uri`."""
    parsed = parse_uri(uri, SINK_SCHEMES, kind="sink")
    if parsed.scheme == "http":
        host, _, port = parsed.location.split("/")[0].rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ObscuraError(
                f"sink {uri}: expected http://HOST:PORT/ with a port 0..65535 (e.g. http://127.0.0.1:8080/)"
            )
        sink = HttpSink(
            host,
            int(port),
            resolve_token(parsed.options, uri),
            _stream(parsed),
            int(parsed.number("quality", 80)),
            metrics,
        )
    elif parsed.scheme == "file":
        sink = FileSink(Path(parsed.location), _stream(parsed), parsed.number("fps", 30))
    else:
        sink = GstreamerSink(parsed, _stream(parsed))
    sink.allow_raw_frames = _allow_raw_frames(parsed)
    return sink


def _free_video_path(path: Path) -> Path:
    """`path`, or OUT-1.mp4, OUT-2.mp4 ... when earlier runs wrote it (their videos are kept)."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def _next_frame_number(folder: Path) -> int:
    """One past the highest frame_N.png an earlier run left in `folder` (0 for a new folder)."""
    numbers = [int(m.group(1)) for p in folder.iterdir() if (m := FRAME_NAME.match(p.name))]
    return max(numbers, default=-1) + 1


class FileSink:
    """Writes frames to a video file (by suffix) or, for a folder, as numbered PNG images.

    A run never overwrites an earlier one: a folder's numbering continues after the frames already
    there, and an existing video file is kept while this run writes OUT-1.mp4 (OUT-2.mp4, ...).
    """

    allow_raw_frames = False

    def __init__(self, path: Path, stream: str = "output", fps: float = 30.0):
        self.path = path
        self.stream = stream
        self.fps = fps or 30.0
        self.is_video = path.suffix.lower() in VIDEO_CODECS
        self._writer = None
        self._first_number = 0
        self.written = 0
        self.video_path = path

    def open(self) -> None:
        """Create the folder, check it takes files and pick this run's names; the video writer opens with the first frame."""
        # Refused now: otherwise every frame fails and the run still ends with exit code 0.
        writable_folder(self.path.parent if self.is_video else self.path)
        if self.is_video:
            self.video_path = _free_video_path(self.path)
            if self.video_path != self.path:
                log.info("%s holds an earlier run; this run writes %s", self.path, self.video_path)
        else:
            self._first_number = _next_frame_number(self.path)

    def write(self, image: np.ndarray, index: int) -> None:
        """Append one frame."""

        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        if not self.is_video:
            if not cv2.imwrite(str(self.path / f"frame_{self._first_number + index:08d}.png"), bgr):
                raise OSError(f"cannot write an image into {self.path}")
        else:
            if self._writer is None:
                fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[self.path.suffix.lower()])
                writer = cv2.VideoWriter(str(self.video_path), fourcc, self.fps, (bgr.shape[1], bgr.shape[0]))
                if not writer.isOpened():
                    raise OSError(f"OpenCV cannot write video {self.video_path}")
                self._writer = writer
            self._writer.write(bgr)
        self.written += 1

    def close(self) -> None:
        """Finish the video file."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.release()


def gstreamer_pipeline(parsed: SourceUri, width: int, height: int, fps: float) -> str:
    """appsrc -> H.264 (low latency) -> RTP over UDP, or pushed to an RTSP server."""
    head = (
        "appsrc is-live=true ! videoconvert ! video/x-raw,format=I420 ! "
        f"x264enc tune=zerolatency speed-preset=ultrafast bitrate={int(parsed.number('kbps', 2000))} "
        f"key-int-max={int(fps)} ! "
    )
    if parsed.scheme == "rtp":
        host, _, port = parsed.location.rpartition(":")
        if not host or not port.isdigit():
            raise ObscuraError(f"sink {parsed.text}: expected rtp://HOST:PORT")
        return head + f"rtph264pay config-interval=1 pt=96 ! udpsink host={host} port={port} sync=false"
    return head + f"rtspclientsink location=rtsp://{parsed.location}"


class GstreamerSink:
    """RTP/RTSP through OpenCV's GStreamer VideoWriter; refused clearly where OpenCV has no GStreamer."""

    allow_raw_frames = False

    def __init__(self, parsed: SourceUri, stream: str = "output"):
        self.parsed = parsed
        self.stream = stream
        self.fps = parsed.number("fps", 30) or 30
        self._writer = None

    def open(self) -> None:
        """Check for GStreamer now, so a wrong build fails at start-up and not at the first frame."""
        if not opencv_has_gstreamer():
            raise ObscuraError(
                f"sink {self.parsed.text}: this OpenCV build has no GStreamer (PyPI wheels lack it); "
                "use the OS/JetPack OpenCV, or the http:// sink"
            )

    def write(self, image: np.ndarray, index: int) -> None:
        """Send one frame; the writer opens on the first frame with its size."""

        if self._writer is None:
            pipeline = gstreamer_pipeline(self.parsed, image.shape[1], image.shape[0], self.fps)
            writer = cv2.VideoWriter(pipeline, cv2.CAP_GSTREAMER, 0, self.fps, (image.shape[1], image.shape[0]))
            if not writer.isOpened():
                raise OSError(f"GStreamer cannot open: {pipeline}")
            self._writer = writer
        self._writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        """Release the writer."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.release()
