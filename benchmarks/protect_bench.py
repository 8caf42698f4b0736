#!/usr/bin/env python3
"""Cost and perceptibility of the software protections (and any evaluate method) per image, and of a P3-mask.

Wall and CPU seconds per image of each method spec (a protection, or any `evaluate` method such as
`optic` or `blur8`), and the PSNR / SSIM of its output to the original, on the first image of each
test identity (celeba-crops, `weights/splits/test.txt`), after one untimed warm-up; for `p3mask`, the seconds
to learn one user's mask from that user's images and the milliseconds to apply it. Torch uses
`--threads` threads (the machine's two cores by default). Prints JSON and writes it to `--json FILE`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_SPECS = ["lowkey", "fawkes", "fgsm", "pgd", "pgd-targeted", "deface-blur", "optic", "blur8", "lowres16"]


def timed(fn, items: list) -> tuple[float, float]:
    """Mean wall and CPU seconds of fn over the items, after one untimed warm-up call."""
    fn(items[0])
    wall, cpu = time.perf_counter(), time.process_time()
    for item in items:
        fn(item)
    return (time.perf_counter() - wall) / len(items), (time.process_time() - cpu) / len(items)


def main(argv: list[str] | None = None) -> int:
    """Time every spec on the same images and one P3-mask user; print and write the JSON summary."""
    import numpy as np
    import torch
    from skimage.metrics import peak_signal_noise_ratio

    from anonymizer import runs
    from evaluation import methods
    from faces.face_sets import list_images, read_rgb, read_split
    from obscura import paths
    from obscura.benchmark import emit
    from protect import p3_mask
    from protect.protection import ssim_8bit

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(paths.shared_data_dir() / "celeba-crops"))
    p.add_argument("--images", type=int, default=10, help="how many images (one per test identity, in name order)")
    p.add_argument("--specs", nargs="*", default=DEFAULT_SPECS)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="write the JSON summary here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    folders = list_images(args.data)
    users = [u for u in read_split(paths.WEIGHTS_DIR / runs.TEST_SPLIT) if u in folders]
    images = [read_rgb(folders[u][0])[0] for u in users[: args.images]]
    summary: dict = {"benchmark": "protections, seconds per image", "data": args.data, "images": len(images)}
    summary["threads"] = args.threads
    for spec in args.specs:
        apply = methods.get(spec).apply
        wall, cpu = timed(apply, images)
        outputs = [apply(image) for image in images]
        summary[spec] = {
            "wall_s_per_image": round(wall, 4),
            "cpu_s_per_image": round(cpu, 4),
            "psnr_db": round(float(np.mean([peak_signal_noise_ratio(a, b) for a, b in zip(images, outputs)])), 2),
            "ssim": round(float(np.mean([ssim_8bit(a, b) for a, b in zip(images, outputs)])), 4),
        }
    user = [read_rgb(f)[0] for f in folders[users[0]]]
    start = time.perf_counter()
    mask = p3_mask.learn_mask(user, p3_mask.P3MaskOptions())
    learn_s = time.perf_counter() - start
    wall, _ = timed(lambda image: p3_mask.apply_mask(image, mask), images)
    summary["p3mask"] = {
        "learn_s_per_user": round(learn_s, 1),
        "user_images": len(user),
        "apply_ms": round(wall * 1e3, 3),
    }
    emit(summary, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
