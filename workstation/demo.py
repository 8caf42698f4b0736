"""The offline demo: `python simulate.py [--out DIR]`.

The astronaut photo from scikit-image (a face that ships with a dependency, so no data is needed):
- seen through three simulated optics ('lens', 'defocus', 'zernike-random'): PSF figures, captures
  and a side-by-side figure;
- through the committed learned camera (weights/): capture -> heatmaps -> several anonymized faces,
  judged for face detection (`anonymizer.fd`) and identity leakage (`anonymizer.identity_leakage`);
- report.json with every figure, and report.html, one page with the images.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from tqdm import tqdm

from obscura import atomic, config
from optics.image_io import write_png
from optics.optic_file import strict_json
from optics.presets import camera_config, camera_from_spec
from optics.psf_metrics import encircled_energy_radius_px
from optics.psf_plots import save_psf_figure, save_side_by_side
from optics.srgb_capture import capture_uint8
from workstation import html_page, learned_camera_demo

DEMO_OPTICS = ("lens", "defocus", "zernike-random")
# The face of skimage.data.astronaut(), 256 x 256 (rows 10-266, columns 120-376).
FACE_BOX = (10, 266, 120, 376)


def astronaut_face() -> np.ndarray:
    """The demo scene: an sRGB uint8 H x W x 3 array."""
    top, bottom, left, right = FACE_BOX
    return np.ascontiguousarray(data.astronaut()[top:bottom, left:right])


def demo_page(out: Path, report: dict) -> Path:
    """report.html: the headline figures, the optics and the anonymizer's images."""
    anon = report["anonymizer"]
    leak = anon["identity_leakage_by"]
    figures = {
        "anonymizer.fd (MTCNN finds a face)": f"{anon['fd']:.3f} of {anon['styles']} outputs",
        "anonymizer.identity_leakage": f"{anon['identity_leakage']:.3f} (SFace {leak['sface']:.3f}, dlib {leak['dlib']:.3f})",
        "SFace cosine of each output to the source": ", ".join(
            "no face" if c is None else f"{c:.3f}" for c in anon["sface_cosine_to_source"]
        ),
        **{
            f"{spec}: r80 (R, G, B)": ", ".join(f"{r:.1f} px" for r in item["encircled_energy_r80_px"])
            for spec, item in report["optics"].items()
        },
        "seconds": str(report["seconds"]),
    }
    rows = [
        (
            "Simulated optics",
            [("scene and captures", out / "side_by_side.png")]
            + [(f"PSF of {spec}", out / f"psf_{spec}.png") for spec in DEMO_OPTICS],
        ),
        ("Learned camera and anonymizer", [(name, out / file) for name, file in anon["images"].items()]),
    ]
    notes = [
        anon["definitions"]["fd"],
        anon["definitions"]["identity_leakage"],
        f"Weights: {anon['weights']} and the stage-I files beside it (weights/manifest.json).",
    ]
    return html_page.write(out / "report.html", "Obscura demo", figures, rows, notes, wide=("Simulated optics",))


def run_demo(out_dir: str, pupil_samples: int | None = None) -> int:
    """The demo face through each demo optic, then through the learned camera and anonymizer; figures, report.json and report.html.

    `pupil_samples` sets every optic's pupil sampling (None: each optic's own), as a SamplingWarning may ask.
    """
    out = Path(out_dir)
    resampled = {} if pupil_samples is None else {"pupil_samples": pupil_samples}
    start = time.time()
    face = astronaut_face()
    write_png(out / "scene.png", face)
    report: dict = {"scene": "skimage.data.astronaut() face crop", "scene_box_rows_cols": list(FACE_BOX), "optics": {}}
    row = [("scene", face)]
    clean = face.astype(np.float64) / 255.0
    for spec in tqdm(DEMO_OPTICS, desc="demo", unit="optic"):
        camera = camera_from_spec(spec, seed=0, **resampled)
        with torch.no_grad():
            psf_t, inside = camera.optic.psf_and_energy()
            blur_px = camera.optic.geometric_blur_diameter_m() / camera.optic.config.pixel_pitch_m
        psf = psf_t.double().numpy()
        capture8 = capture_uint8(camera, face)
        write_png(out / f"capture_{spec}.png", capture8)
        save_psf_figure(out / f"psf_{spec}.png", psf, camera.optic.config.pixel_pitch_m, f"PSF of '{spec}'")
        row.append((spec, capture8))
        srgb_capture = capture8.astype(np.float64) / 255.0
        report["optics"][spec] = {
            "encircled_energy_r50_px": encircled_energy_radius_px(psf, 0.5),
            "encircled_energy_r80_px": encircled_energy_radius_px(psf, 0.8),
            "geometric_blur_diameter_px": blur_px.tolist(),
            "window_energy_fraction": inside.tolist(),
            "capture_psnr_db": float(peak_signal_noise_ratio(clean, srgb_capture, data_range=1.0)),
            "capture_ssim": float(structural_similarity(clean, srgb_capture, channel_axis=2, data_range=1.0)),
            "config": config.to_dict(camera_config(camera)),
        }
    save_side_by_side(out / "side_by_side.png", [("astronaut", row)])
    report["anonymizer"] = learned_camera_demo.run(
        data.astronaut(), out, "skimage.data.astronaut()", pupil_samples=pupil_samples
    )
    report["seconds"] = round(time.time() - start, 2)
    atomic.write_json(out / "report.json", strict_json(report))
    demo_page(out, report)
    print(
        f"demo: wrote {out}/ (report.html, report.json, scene.png, psf_*.png, capture_*.png, side_by_side.png, anonymized_*.png)"
    )
    for spec, item in report["optics"].items():
        r80 = ", ".join(f"{r:.1f}" for r in item["encircled_energy_r80_px"])
        print(
            f"  {spec:15s} r80 (R,G,B) = {r80} px   PSNR {item['capture_psnr_db']:.1f} dB   SSIM {item['capture_ssim']:.3f}"
        )
    anon = report["anonymizer"]
    print(
        f"  anonymizer: {anon['styles']} faces, MTCNN finds a face in {anon['fd']:.2f}, identity leakage {anon['identity_leakage']:.2f}"
    )
    return 0
