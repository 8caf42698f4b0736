"""`simulate.py calibrate` / `python -m calibration`: synth | measure | fit | finetune | intrinsics.

* synth: synthetic point-source captures and dark frames from a (perturbed) simulated camera;
* measure: captures + dark frames -> measured PSF (psf.npy, psf_sigma.npy, measure.json, psf.png);
* fit: simulated camera fitted to a measured PSF (fit.json, fit.png);
* finetune: the stage-I regressor fine-tuned on captures through a measured PSF (regressor.pt,
  finetune.json with the landmark NME before and after, finetune.png);
* intrinsics: camera matrix and distortion from checkerboard images (intrinsics.json).
Every command writes its resolved configuration (config.yaml) next to its outputs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from calibration.finetune import FinetuneConfig, run
from calibration.fit import FitConfig, fit_camera
from calibration.frame_files import list_frames, read_stack
from calibration.intrinsics import calibrate
from calibration.measure import MeasureConfig, measure_psf
from calibration.synthetic import SynthConfig, synthesise_captures
from obscura import atomic, config
from obscura.command_line import add_config_options, load_config
from obscura.errors import ObscuraError
from optics.fabrication.as_built import Errors, as_built_psf
from optics.fabrication.fabrication_plots import save_psf_pair
from optics.presets import camera_from_spec
from optics.psf_plots import save_psf_figure

FIT_NOT_CONVERGED_EXIT = 1  # outputs are written (to inspect), but the fit is not to be trusted
SUMMARY = "measured PSFs from a prototype, the fitted optic, sim-to-real fine-tuning, camera intrinsics"


def _common(parser: argparse.ArgumentParser) -> None:
    """--config, --set and --out."""
    add_config_options(parser, "YAML/JSON configuration file")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `calibrate` with its steps as sub-commands."""
    p = subparsers.add_parser("calibrate", help=SUMMARY, description=__doc__.splitlines()[0])
    add_subcommands(p.add_subparsers(dest="step", required=True, metavar="STEP"))


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    """The calibration steps: synth, measure, fit, finetune, intrinsics."""
    s = sub.add_parser("synth", help="synthetic point-source captures from a perturbed simulated camera")
    _common(s)
    s.set_defaults(func=run_synth)
    m = sub.add_parser("measure", help="measured PSF from point-source captures and dark frames")
    m.add_argument("--captures", nargs="+", required=True, help="frame files or folders (.npy, .tif, .png)")
    m.add_argument("--darks", nargs="+", required=True, help="dark frame files or folders, same exposure")
    _common(m)
    m.set_defaults(func=run_measure)
    f = sub.add_parser("fit", help="fit the simulated camera to a measured PSF")
    f.add_argument("--optic", required=True, help="lens | defocus | zernike-random | saved optic (.npz)")
    f.add_argument("--measured", required=True, help="folder written by `measure` (psf.npy, psf_sigma.npy)")
    f.add_argument("--seed", type=int, default=0, help="seed of a random preset mask (default %(default)s)")
    _common(f)
    f.set_defaults(func=run_fit)
    t = sub.add_parser(
        "finetune", help="fine-tune the stage-I regressor on captures through a measured PSF (sim-to-real)"
    )
    t.add_argument("--measured", required=True, help="folder written by `measure` (psf.npy)")
    t.add_argument("--run", help="stage-I output folder (default: the committed weights)")
    _common(t)
    t.set_defaults(func=run_finetune)
    i = sub.add_parser("intrinsics", help="camera matrix and distortion from checkerboard images")
    i.add_argument("images", nargs="+", help="checkerboard images or folders")
    i.add_argument("--corners", required=True, help="inner corners as COLSxROWS, e.g. 9x6")
    i.add_argument("--square", type=float, required=True, metavar="M", help="square size (m)")
    i.add_argument("--out", required=True, help="output folder")
    i.set_defaults(func=run_intrinsics)


def run_synth(args: argparse.Namespace) -> int:
    """Write captures/*.npy, darks/*.npy and truth.json."""
    cfg = load_config(SynthConfig, args)
    c = cfg.capture
    optic = camera_from_spec(c.optic, seed=c.seed, psf_size=c.psf_size).optic
    errors = Errors(
        c.distance_error_m,
        tuple(c.mask_shift_m),
        c.rotation_rad,
        c.height_scale,
        c.defocus_waves,
        tuple(c.psf_shift_px),
    )
    with torch.no_grad():
        psf = as_built_psf(optic, errors).numpy()
    lights, darks = synthesise_captures(psf, tuple(c.frame), tuple(c.top_left), cfg.noise, seed=c.seed)
    out = Path(args.out)
    for name, stack in (("captures", lights), ("darks", darks)):
        for k, frame in enumerate(stack):
            with atomic.atomic_path(out / name / f"{k:03d}.npy") as tmp, open(tmp, "wb") as handle:
                np.save(handle, frame.astype(np.uint16))
    axis = [c.top_left[0] + c.psf_size // 2 + c.psf_shift_px[1], c.top_left[1] + c.psf_size // 2 + c.psf_shift_px[0]]
    atomic.write_json(out / "truth.json", {"config": config.to_dict(cfg), "optical_axis_px_row_col": axis})
    config.write_resolved(cfg, out)
    print(f"synth: {len(lights)} captures + {len(darks)} darks of {lights.shape[1:]} -> {out}")
    return 0


def run_measure(args: argparse.Namespace) -> int:
    """Write psf.npy, psf_sigma.npy, measure.json, psf.png and config.yaml."""
    cfg = load_config(MeasureConfig, args)
    captures = read_stack(list_frames(args.captures, "captures"))
    darks = read_stack(list_frames(args.darks, "dark frames"))
    measured = measure_psf(captures, darks, cfg)
    out = Path(args.out)
    for name, array in (("psf.npy", measured.psf), ("psf_sigma.npy", measured.sigma)):
        with atomic.atomic_path(out / name) as tmp, open(tmp, "wb") as handle:
            np.save(handle, array)
    atomic.write_json(
        out / "measure.json",
        {"centroid_px_row_col": measured.centroid_px, "offset_px_row_col": measured.offset_px, **measured.info},
    )
    config.write_resolved(cfg, out)
    save_psf_figure(
        out / "psf.png",
        measured.psf,
        1.0,
        f"measured PSF ({measured.info['frames']} frames, SNR {measured.info['peak_snr']:.0f})",
    )
    print(
        f"measure: PSF {measured.psf.shape} centred at ({measured.centroid_px[0]:.2f}, {measured.centroid_px[1]:.2f}) px, "
        f"{measured.info['hot_pixels']} hot pixels, peak SNR {measured.info['peak_snr']:.0f} -> {out}"
    )
    return 0


def run_fit(args: argparse.Namespace) -> int:
    """Write fit.json, fit.png and config.yaml."""
    cfg = load_config(FitConfig, args)
    folder = Path(args.measured)
    try:
        psf, sigma = np.load(folder / "psf.npy"), np.load(folder / "psf_sigma.npy")
    except (OSError, ValueError) as err:
        raise ObscuraError(
            f"measured PSF in {folder} cannot be read ({err}); expected the folder written by `measure`"
        ) from None
    optic = camera_from_spec(args.optic, seed=args.seed, psf_size=psf.shape[-1]).optic
    print(
        f"fit: {len(cfg.parameters)} parameters, {cfg.steps} steps on a {psf.shape[-1]} px crop "
        f"({optic.config.pupil_samples} pupil samples, {optic.wavelengths_m.numel()} wavelengths)",
        flush=True,
    )
    result = fit_camera(optic, psf, sigma, cfg)
    converged = result.converged(cfg)
    out = Path(args.out)
    atomic.write_json(
        out / "fit.json",
        {
            "optic": args.optic,
            "values": result.values,
            "chi2_per_pixel": result.chi2_per_pixel,
            "relative_residual": result.relative_residual,
            "correlation": result.correlation,
            "converged": converged,
            "max_chi2_per_pixel": cfg.max_chi2_per_pixel,
            "start": result.start,
            "loss_history": result.history,
        },
    )
    config.write_resolved(cfg, out)
    save_psf_pair(
        out / "fit.png",
        psf,
        result.model_psf,
        ("measured", "fitted"),
        f"chi2/pixel {result.chi2_per_pixel:.2f}, relative residual {result.relative_residual:.3f}",
    )
    print("fit: " + ", ".join(f"{k}={v:.4g}" for k, v in result.values.items()))
    print(
        f"fit: chi2/pixel {result.chi2_per_pixel:.2f}, relative residual {result.relative_residual:.4f}, "
        f"correlation {result.correlation:.4f} -> {out}"
    )
    if not converged:
        print(
            f"fit: warning: did not converge: chi2/pixel {result.chi2_per_pixel:.2f} is above max_chi2_per_pixel "
            f"{cfg.max_chi2_per_pixel:g} (the fitted model does not explain the measurement to within its noise); "
            "check the crop holds the PSF, or raise steps",
            file=sys.stderr,
        )
        return FIT_NOT_CONVERGED_EXIT
    return 0


def run_finetune(args: argparse.Namespace) -> int:
    """Write regressor.pt, finetune.json, finetune.png and config.yaml."""
    result = run(load_config(FinetuneConfig, args, {"measured": args.measured, "run": args.run}), args.out)
    nme = result["landmark_nme"]
    print(
        f"finetune: landmark NME on {result['val_images']} held-out faces: design PSF {nme['design_psf']:.4f}, "
        f"measured PSF before {nme['measured_psf_before']:.4f}, after {nme['measured_psf_after']:.4f} -> {args.out}"
    )
    return 0


def run_intrinsics(args: argparse.Namespace) -> int:
    """Write intrinsics.json."""
    try:
        cols, rows = (int(v) for v in args.corners.lower().split("x"))
    except ValueError:
        raise ObscuraError(f"--corners is {args.corners!r}; expected COLSxROWS inner corners, e.g. 9x6") from None
    paths = [p for p in list_frames(args.images, "checkerboard images") if p.suffix.lower() != ".npy"]
    images = []
    for p in paths:
        image = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise ObscuraError(f"checkerboard image {p} cannot be read")
        images.append(image)
    result = calibrate(images, [str(p) for p in paths], (cols, rows), args.square)
    out = Path(args.out)
    atomic.write_json(
        out / "intrinsics.json", {**dataclasses.asdict(result), "corners": [cols, rows], "square_m": args.square}
    )
    k = result.camera_matrix
    print(
        f"intrinsics: fx={k[0][0]:.2f} fy={k[1][1]:.2f} cx={k[0][2]:.2f} cy={k[1][2]:.2f} px, "
        f"RMS reprojection {result.rms_reprojection_px:.3f} px from {result.views_used} views -> {out}"
    )
    return 0
