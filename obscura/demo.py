"""The offline demo: `python simulate.py [--out DIR]`.

Stage 0: the astronaut face from scikit-image seen through three simulated optics ('lens',
'defocus', 'zernike-random'): PSF figures, captures, a side-by-side figure and report.json.
"""
from __future__ import annotations

import time
from pathlib import Path

DEMO_OPTICS = ("lens", "defocus", "zernike-random")
# The face of skimage.data.astronaut(), 256 x 256 (rows 10-266, columns 120-376).
FACE_BOX = (10, 266, 120, 376)


def astronaut_face():
    """The demo scene: an sRGB float32 H x W x 3 array in [0, 1]."""
    from skimage import data

    top, bottom, left, right = FACE_BOX
    return data.astronaut()[top:bottom, left:right].astype("float32") / 255.0


def run_demo(out_dir: str) -> int:
    """Simulate PSFs and captures of the demo face through each demo optic; write figures and report.json."""
    import numpy as np
    import torch
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    from tqdm import tqdm

    from obscura import atomic, config
    from optics import image_io
    from optics.optic_file import strict_json
    from optics.plots import save_psf_figure, save_side_by_side
    from optics.presets import camera_config, camera_from_spec
    from optics.psf_metrics import encircled_energy_radius_px

    out = Path(out_dir)
    start = time.time()
    face = astronaut_face()
    scene = image_io.to_linear_tensor(face)
    image_io.write_png(out / "scene.png", image_io.to_srgb8(scene))
    report: dict = {"scene": "skimage.data.astronaut() face crop", "scene_box_rows_cols": list(FACE_BOX), "optics": {}}
    row = [("scene", image_io.to_srgb8(scene))]
    for spec in tqdm(DEMO_OPTICS, desc="demo", unit="optic"):
        camera = camera_from_spec(spec, seed=0)
        with torch.no_grad():
            psf_t, inside = camera.optic.psf_and_energy()
            capture = camera(scene)
            blur_px = camera.optic.geometric_blur_diameter_m() / camera.optic.config.pixel_pitch_m
        psf = psf_t.double().numpy()
        capture8 = image_io.to_srgb8(capture)
        image_io.write_png(out / f"capture_{spec}.png", capture8)
        save_psf_figure(out / f"psf_{spec}.png", psf, camera.optic.config.pixel_pitch_m, f"PSF of '{spec}'")
        row.append((spec, capture8))
        srgb_capture = capture8.astype(np.float64) / 255.0
        report["optics"][spec] = {
            "encircled_energy_r50_px": encircled_energy_radius_px(psf, 0.5),
            "encircled_energy_r80_px": encircled_energy_radius_px(psf, 0.8),
            "geometric_blur_diameter_px": blur_px.tolist(),
            "window_energy_fraction": inside.tolist(),
            "capture_psnr_db": float(peak_signal_noise_ratio(face.astype(np.float64), srgb_capture, data_range=1.0)),
            "capture_ssim": float(structural_similarity(face.astype(np.float64), srgb_capture, channel_axis=2, data_range=1.0)),
            "config": config.to_dict(camera_config(camera)),
        }
    save_side_by_side(out / "side_by_side.png", [("astronaut", row)])
    report["seconds"] = round(time.time() - start, 2)
    atomic.write_json(out / "report.json", strict_json(report))
    print(f"demo: wrote {out}/ (scene.png, psf_*.png, capture_*.png, side_by_side.png, report.json)")
    for spec, item in report["optics"].items():
        r80 = ", ".join(f"{r:.1f}" for r in item["encircled_energy_r80_px"])
        print(f"  {spec:15s} r80 (R,G,B) = {r80} px   PSNR {item['capture_psnr_db']:.1f} dB   SSIM {item['capture_ssim']:.3f}")
    return 0
