"""Frame sources by URI. Every source yields H x W x 3 uint8 RGB frames from `read()`; None means it ended.

picam://0                  Raspberry Pi camera through picamera2 (from the OS: python3-picamera2)
csi://0                    Jetson CSI camera: GStreamer nvarguscamerasrc through OpenCV (JetPack's OpenCV)
v4l2:///dev/video0         any V4L2 camera through OpenCV
file://VIDEO_OR_FOLDER     a video file or a folder of images (sorted by name)
sim://FOLDER?psf=FILE      clean frames from a folder or video, passed through the optic (workstation only)

Query options: width, height, fps (capture rate; for file:// and sim:// the playback pace, 0 = as fast
as possible). Heavy or device-only modules (cv2, picamera2) are imported when a source opens.

Only sim:// is `optical`: the firmware applies the PSF itself. A camera's or a file's frames may
come without the optic (a USB webcam, clean footage), so they count as raw (see firmware.pipeline).
Every source is opened, read and closed on one thread (the pipeline's reader).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs

import cv2
import numpy as np

from firmware.psf import PsfConvolver, load_psf
from obscura.errors import ObscuraError

SCHEMES = ("picam", "csi", "v4l2", "file", "sim")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


class Source(Protocol):
    """A camera-like frame producer."""

    uri: str
    optical: bool

    def open(self) -> None:
        """Acquire the device or file; raises on failure."""

    def read(self) -> np.ndarray | None:
        """The next H x W x 3 uint8 RGB frame, or None when the source has ended."""

    def close(self) -> None:
        """Release the device; safe to call twice, called on the thread that reads."""


@dataclass(frozen=True)
class SourceUri:
    """A parsed source URI: scheme, the location after `scheme://`, and query options."""

    scheme: str
    location: str
    options: dict[str, str] = field(default_factory=dict)
    text: str = ""

    def number(self, key: str, default: float) -> float:
        """A numeric query option, with a one-line error naming it when it is not a number."""
        raw = self.options.get(key)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ObscuraError(f"source {self.text}: option {key}={raw!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise ObscuraError(f"{self.text}: option {key}={raw!r}; expected a finite number >= 0")
        return value


def parse_uri(uri: str, schemes: tuple[str, ...] = SCHEMES, kind: str = "source") -> SourceUri:
    """Split `scheme://location?k=v&...`; the location is kept verbatim (file://rel/dir and file:///abs both work)."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in schemes:
        raise ObscuraError(f"{kind} URI {uri!r}: expected one of {', '.join(s + '://' for s in schemes)}")
    location, _, query = rest.partition("?")
    options = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    return SourceUri(scheme, location, options, uri)


def open_source(uri: str) -> Source:
    """Build (not yet open) the source named by `uri`."""
    parsed = parse_uri(uri)
    builders = {"picam": PicamSource, "csi": CsiSource, "v4l2": V4l2Source, "file": FileSource, "sim": SimSource}
    return builders[parsed.scheme](parsed)


def _camera_index(parsed: SourceUri) -> int:
    """The camera number of picam://N and csi://N."""
    if not parsed.location.isdigit():
        raise ObscuraError(f"source {parsed.text}: expected a camera number such as {parsed.scheme}://0")
    return int(parsed.location)


class PicamSource:
    """Raspberry Pi camera through picamera2 (its 'main' stream configured as RGB888)."""

    optical = False

    def __init__(self, parsed: SourceUri):
        self.uri = parsed.text
        self.index = _camera_index(parsed)
        self.size = (int(parsed.number("width", 640)), int(parsed.number("height", 480)))
        self.fps = parsed.number("fps", 30)
        self._camera = None

    def open(self) -> None:
        """Configure and start the camera."""
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise ObscuraError(
                f"source {self.uri}: picamera2 is not installed (apt install python3-picamera2; "
                "a virtualenv needs --system-site-packages)"
            ) from None
        camera = Picamera2(self.index)
        config = camera.create_video_configuration(
            main={"size": self.size, "format": "RGB888"}, controls={"FrameRate": self.fps}
        )
        camera.configure(config)
        camera.start()
        self._camera = camera

    def read(self) -> np.ndarray | None:
        """One frame. picamera2's 'RGB888' is B, G, R byte order in memory, so it is reversed here."""
        if self._camera is None:
            raise RuntimeError("camera is closed")
        frame = self._camera.capture_array("main")
        return np.ascontiguousarray(frame[..., 2::-1])

    def close(self) -> None:
        """Stop and release the camera."""
        camera, self._camera = self._camera, None
        if camera is not None:
            camera.stop()
            camera.close()


class _OpenCvCapture:
    """Shared OpenCV VideoCapture handling for csi://, v4l2:// and video files."""

    uri: str
    optical = False

    def __init__(self) -> None:
        self._cap = None

    def _target(self) -> tuple[object, int]:
        """What to hand to cv2.VideoCapture: (filename or pipeline, API preference)."""
        raise NotImplementedError

    def open(self) -> None:
        """Open the capture; a capture OpenCV cannot open is an error naming the URI."""

        target, api = self._target()
        cap = cv2.VideoCapture(target, api)
        if not cap.isOpened():
            cap.release()
            raise OSError(f"OpenCV cannot open {self.uri}")
        self._configure(cap)
        self._cap = cap

    def _configure(self, cap: object) -> None:
        """Per-source capture properties; none by default."""

    def read(self) -> np.ndarray | None:
        """One frame as RGB, or None at the end of a file."""

        cap = self._cap
        if cap is None:
            raise RuntimeError("capture is closed")
        ok, frame = cap.read()
        if not ok or frame is None:
            return None
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        """Release the capture."""
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


def csi_pipeline(index: int, width: int, height: int, fps: int) -> str:
    """The GStreamer pipeline for a Jetson CSI camera: NVMM capture, converted to BGR, newest frame only."""
    return (
        f"nvarguscamerasrc sensor-id={index} ! "
        f"video/x-raw(memory:NVMM),width={width},height={height},framerate={fps}/1 ! "
        "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
        "appsink max-buffers=1 drop=true"
    )


def opencv_has_gstreamer() -> bool:
    """Whether this OpenCV build was compiled with GStreamer (PyPI wheels are not; JetPack's is)."""

    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line
    return False


class CsiSource(_OpenCvCapture):
    """Jetson CSI camera through OpenCV's GStreamer backend."""

    def __init__(self, parsed: SourceUri):
        super().__init__()
        self.uri = parsed.text
        self.pipeline = csi_pipeline(
            _camera_index(parsed),
            int(parsed.number("width", 1280)),
            int(parsed.number("height", 720)),
            int(parsed.number("fps", 30)),
        )

    def _target(self) -> tuple[object, int]:

        if not opencv_has_gstreamer():
            raise ObscuraError(f"source {self.uri}: this OpenCV build has no GStreamer (use JetPack's OpenCV)")
        return self.pipeline, cv2.CAP_GSTREAMER


class V4l2Source(_OpenCvCapture):
    """A V4L2 device (USB webcams, the Pi's legacy stack) through OpenCV."""

    def __init__(self, parsed: SourceUri):
        super().__init__()
        self.uri = parsed.text
        if not parsed.location.startswith("/dev/"):
            raise ObscuraError(f"source {parsed.text}: expected a device path such as v4l2:///dev/video0")
        self.device = parsed.location
        self.width = int(parsed.number("width", 0))
        self.height = int(parsed.number("height", 0))
        self.fps = parsed.number("fps", 0)

    def _target(self) -> tuple[object, int]:

        return self.device, cv2.CAP_V4L2

    def _configure(self, cap: object) -> None:
        """Ask for the requested size and rate; keep only one buffered frame so frames are fresh."""

        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        if self.width and self.height:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        if self.fps:
            cap.set(cv2.CAP_PROP_FPS, self.fps)


class _Pacer:
    """Holds a file's playback to `fps` frames per second (0 = unpaced), like a camera would."""

    def __init__(self, fps: float):
        self.period = 1.0 / fps if fps > 0 else 0.0
        self._due = 0.0

    def wait(self) -> None:
        """Sleep until the next frame is due."""
        if not self.period:
            return
        now = time.monotonic()
        if self._due > now:
            time.sleep(self._due - now)
        self._due = max(self._due, now) + self.period


class _VideoFile(_OpenCvCapture):
    """A video file read by OpenCV (FFmpeg backend)."""

    def __init__(self, path: Path, uri: str):
        super().__init__()
        self.path = path
        self.uri = uri

    def _target(self) -> tuple[object, int]:

        return str(self.path), cv2.CAP_ANY


class _ImageFolder:
    """Images of a folder, sorted by name, read one per frame."""

    def __init__(self, folder: Path, uri: str):
        self.folder = folder
        self.uri = uri
        self._files: list[Path] = []
        self._next = 0

    def open(self) -> None:
        """List the images; an empty folder is an error."""
        self._files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._files:
            raise ObscuraError(f"source {self.uri}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {self.folder}")
        self._next = 0

    def read(self) -> np.ndarray | None:
        """The next image as RGB, or None after the last one."""

        if self._next >= len(self._files):
            return None
        path = self._files[self._next]
        self._next += 1
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is None:
            raise OSError(f"cannot decode image {path}")
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        """Nothing to release."""


def _media(path_text: str, uri: str) -> _ImageFolder | _VideoFile:
    """A folder of images or a video file, checked to exist."""
    path = Path(path_text)
    if path.is_dir():
        return _ImageFolder(path, uri)
    if path.is_file():
        return _VideoFile(path, uri)
    raise ObscuraError(f"source {uri}: {path} is neither a folder of images nor a video file")


class FileSource:
    """Recorded frames from a video or a folder, paced to `fps` (default 30); not known to be optical captures."""

    optical = False

    def __init__(self, parsed: SourceUri):
        self.uri = parsed.text
        self._media = _media(parsed.location, parsed.text)
        self._pacer = _Pacer(parsed.number("fps", 30))

    def open(self) -> None:
        """Open the file or list the folder."""
        self._media.open()

    def read(self) -> np.ndarray | None:
        """The next frame, at the playback pace."""
        self._pacer.wait()
        return self._media.read()

    def close(self) -> None:
        """Release the file."""
        self._media.close()


class SimSource:
    """A simulated privacy camera: clean frames go through the PSF here and only the capture leaves `read()`."""

    optical = True

    def __init__(self, parsed: SourceUri):

        self.uri = parsed.text
        psf_path = parsed.options.get("psf")
        if not psf_path:
            raise ObscuraError(f"source {parsed.text}: sim:// needs ?psf=FILE.npy (the optic's PSF)")
        self._optic = PsfConvolver(load_psf(psf_path))
        self._clean = FileSource(parsed)

    def open(self) -> None:
        """Open the clean footage."""
        self._clean.open()

    def read(self) -> np.ndarray | None:
        """The optical capture of the next clean frame (the clean frame itself goes no further)."""
        clean = self._clean.read()
        return None if clean is None else self._optic.capture(clean)

    def close(self) -> None:
        """Release the clean footage."""
        self._clean.close()
