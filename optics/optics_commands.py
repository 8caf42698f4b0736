"""`simulate.py psf` and `simulate.py capture`: PSFs and captures through a named or saved optic."""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from obscura import atomic, config
from obscura.command_line import add_config_options
from obscura.errors import ObscuraError
from optics import checks, image_io
from optics.camera import Camera
from optics.optic_file import strict_json
from optics.presets import camera_config, camera_from_spec
from optics.psf_metrics import centroid_px, encircled_energy_radius_px
from optics.psf_plots import save_psf_figure, save_side_by_side
from optics.srgb_capture import capture_srgb

OPTIC_HELP = "lens | defocus | zernike-random | path to a saved optic (.npz)"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `psf` and `capture` sub-commands."""
    psf = subparsers.add_parser("psf", help="simulate the PSF of an optic", description="Simulate the PSF of an optic.")
    _optic_options(psf)
    psf.add_argument(
        "--depths", type=float, nargs="+", metavar="M", help="also write psf_depths.npy for these object distances (m)"
    )
    add_config_options(psf, "camera configuration (YAML/JSON), e.g. the config.yaml of an earlier psf run")
    psf.set_defaults(func=run_psf)

    cap = subparsers.add_parser(
        "capture",
        help="simulate captures of images through an optic",
        description="Simulate captures of images through an optic.",
    )
    _optic_options(cap)
    cap.add_argument(
        "inputs", nargs="+", metavar="IMAGES_OR_FOLDER", help="image files and/or folders of images (sRGB)"
    )
    cap.add_argument("--no-noise", action="store_true", help="noise-free sensor (quantisation is kept)")
    cap.add_argument("--bayer", action="store_true", help="RGGB mosaic + bilinear demosaic")
    cap.add_argument("--bit-depth", type=int, help="sensor bit depth (default 10)")
    cap.add_argument(
        "--max-side", type=int, default=1024, help="shrink larger images to this longest side (default %(default)s)"
    )
    add_config_options(cap, "camera configuration (YAML/JSON), e.g. the config.yaml of an earlier psf run")
    cap.set_defaults(func=run_capture)


def _optic_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by psf and capture; unset ones keep the preset's value."""
    parser.add_argument("--optic", default="lens", help=f"{OPTIC_HELP} (default: %(default)s)")
    parser.add_argument("--focal-length", type=float, metavar="M", help="lens focal length (m)")
    parser.add_argument("--aperture", type=float, metavar="M", help="aperture diameter (m)")
    parser.add_argument(
        "--wavelength",
        type=float,
        nargs="+",
        metavar="M",
        help="one centre wavelength per channel (m); one value gives a monochromatic PSF",
    )
    parser.add_argument(
        "--samples-per-channel", type=int, help="wavelengths sampled per channel (default 3; 1 with --wavelength)"
    )
    parser.add_argument("--pixel-pitch", type=float, metavar="M", help="sensor pixel pitch (m)")
    parser.add_argument("--size", type=int, metavar="PX", help="PSF window side in pixels")
    parser.add_argument("--object-distance", type=float, metavar="M", help="point-source distance (m; inf = infinity)")
    parser.add_argument(
        "--sensor-distance",
        type=float,
        metavar="M",
        help="lens-to-sensor distance (m); for --optic lens it defaults to the in-focus distance",
    )
    parser.add_argument("--pupil-samples", type=int, help="pupil grid samples across the aperture")
    parser.add_argument("--oversample", type=int, help="sub-samples per pixel side for area integration")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of random masks and sensor noise (default %(default)s)"
    )
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Map command-line options onto camera config keys."""
    table = {
        "focal_length": "optic.lens.focal_length_m",
        "aperture": "optic.lens.aperture_diameter_m",
        "pixel_pitch": "optic.pixel_pitch_m",
        "size": "optic.psf_size",
        "object_distance": "optic.object_distance_m",
        "sensor_distance": "optic.sensor_distance_m",
        "pupil_samples": "optic.pupil_samples",
        "oversample": "optic.pixel_oversample",
        "samples_per_channel": "optic.spectrum.samples_per_channel",
    }
    out = {key: getattr(args, name) for name, key in table.items() if getattr(args, name) is not None}
    if args.wavelength is not None:
        out["optic.spectrum.centres_m"] = list(args.wavelength)
        out.setdefault("optic.spectrum.samples_per_channel", 1)
    if getattr(args, "no_noise", False):
        out["sensor.noise"] = False
    if getattr(args, "bayer", False):
        out["sensor.bayer"] = True
    if getattr(args, "bit_depth", None) is not None:
        out["sensor.bit_depth"] = args.bit_depth
    return out


def build_camera(args: argparse.Namespace) -> Camera:
    """The camera the options describe (preset < --config < --set < flags), on the requested device and dtype."""
    # The file's sections merge whole (deep), then each --set key, then the flags given.
    overrides = {**(config.read_file(args.config) if args.config else {}), **config.parse_overrides(args.set)}
    overrides.update(_overrides(args))
    if (
        args.optic == "lens"
        and args.sensor_distance is None
        and ("optic.lens.focal_length_m" in overrides or "optic.object_distance_m" in overrides)
    ):
        # Keep the ideal lens in focus: 1/z = 1/f - 1/s_o.
        f = overrides.get("optic.lens.focal_length_m", 0.05)
        s_o = overrides.get("optic.object_distance_m", math.inf)
        if f > 0 and s_o > f:
            overrides["optic.sensor_distance_m"] = 1.0 / (1.0 / f - (0.0 if math.isinf(s_o) else 1.0 / s_o))
    camera = camera_from_spec(args.optic, seed=args.seed, **overrides)
    try:
        device = torch.device(args.device)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as err:
        raise ObscuraError(f"--device {args.device!r} is not available here ({str(err).splitlines()[0]})") from None
    return camera.to(device=device, dtype=getattr(torch, args.dtype))


def run_psf(args: argparse.Namespace) -> int:
    """Write psf.npy (C x H x W), psf.json, config.yaml and psf.png into --out."""
    out = atomic.writable_folder(args.out)
    camera = build_camera(args)
    with torch.no_grad():
        psf_t, inside = camera.optic.psf_and_energy()
        blur = camera.optic.geometric_blur_diameter_m()
    psf = psf_t.cpu().double().numpy()
    with atomic.atomic_path(out / "psf.npy") as tmp, open(tmp, "wb") as handle:
        np.save(handle, psf.astype(np.float32 if args.dtype == "float32" else np.float64))
    cfg = camera_config(camera)
    pitch = cfg.optic.pixel_pitch_m
    wavelengths, weights = camera.optic.wavelengths_m, camera.optic.weights
    info = {
        "optic": args.optic,
        "pixel_pitch_m": pitch,
        "shape": list(psf.shape),
        "centre_pixel": [psf.shape[1] // 2, psf.shape[2] // 2],
        "normalisation": "each channel sums to 1 over the window",
        "wavelengths_m": wavelengths.tolist(),
        "wavelength_weights": weights.tolist(),
        "focal_lengths_m": camera.optic.focal_lengths_m(wavelengths).tolist(),
        "window_energy_fraction": inside.cpu().tolist(),
        "geometric_blur_diameter_px": (blur / pitch).tolist(),
        "encircled_energy_r50_px": encircled_energy_radius_px(psf, 0.5),
        "encircled_energy_r80_px": encircled_energy_radius_px(psf, 0.8),
        "centroid_px": centroid_px(psf),
        "seed": args.seed,
        "dtype": args.dtype,
        "config": config.to_dict(cfg),
    }
    if args.depths:
        with torch.no_grad():
            stack = camera.optic.psf_stack(args.depths).cpu().double().numpy()
        with atomic.atomic_path(out / "psf_depths.npy") as tmp, open(tmp, "wb") as handle:
            np.save(handle, stack.astype(np.float32))
        info["depths_m"] = list(args.depths)
        info["depths_encircled_energy_r80_px"] = [encircled_energy_radius_px(p, 0.8) for p in stack]
    atomic.write_json(out / "psf.json", strict_json(info))
    config.write_resolved(cfg, out)
    save_psf_figure(out / "psf.png", psf, pitch, f"PSF of '{args.optic}' ({psf.shape[1]} px at {pitch * 1e6:.3g} um)")
    print(
        f"psf: {psf.shape} -> {out}/psf.npy; r80 = {', '.join(f'{r:.1f}' for r in info['encircled_energy_r80_px'])} px; "
        f"window energy {', '.join(f'{e:.3f}' for e in info['window_energy_fraction'])}"
    )
    return 0


def run_capture(args: argparse.Namespace) -> int:
    """Write <name>_capture.png per image, side_by_side.png, capture.json and config.yaml into --out."""
    out = atomic.writable_folder(args.out)
    checks.positive_int("--max-side", args.max_side)
    paths = image_io.list_images(args.inputs)
    scenes = [image_io.read_srgb(p, args.max_side) for p in paths]
    camera = build_camera(args)
    if camera.optic.channels != 3:
        raise ObscuraError(f"capture needs 3 colour channels; --wavelength gave {camera.optic.channels}")
    rows, written = [], []
    device = camera.optic.amplitude.device
    dtype = camera.optic.amplitude.dtype
    with torch.no_grad():
        for path, srgb in tqdm(list(zip(paths, scenes)), desc="capture", unit="image"):
            scene = image_io.batch_of_one(srgb).to(device=device, dtype=dtype)
            capture8 = image_io.to_uint8(capture_srgb(camera, scene)[0])
            target = out / f"{path.stem}_capture.png"
            image_io.write_png(target, capture8)
            written.append(str(target))
            rows.append((path.stem, [("scene", image_io.to_uint8(scene[0])), (f"capture ({args.optic})", capture8)]))
    save_side_by_side(out / "side_by_side.png", rows[:8])
    cfg = camera_config(camera)
    atomic.write_json(
        out / "capture.json",
        strict_json(
            {
                "optic": args.optic,
                "inputs": [str(p) for p in paths],
                "captures": written,
                "seed": args.seed,
                "dtype": args.dtype,
                "config": config.to_dict(cfg),
            }
        ),
    )
    config.write_resolved(cfg, out)
    print(f"capture: {len(written)} image(s) through '{args.optic}' -> {out}")
    return 0
