#!/usr/bin/env python3
"""Optics speed: RGB PSF (3 wavelengths) and a batch of 16 captures at 256 x 256, per pupil grid,
for Obscura's optics and for torchoptics on identical grids. Prints JSON; --json FILE also writes it.

What is timed (median of --repeats runs after one warm-up, same dtype for both libraries):
* psf_rgb: N x N pupil (lens phase + a 36-term Zernike mask) -> 3 wavelengths -> PSF.
  Obscura: single-step Fresnel by matrix Fourier transforms onto the 256 x 256 sensor window at
  3.713 um with 3 x 3 sub-samples per pixel (its default). torchoptics: Field -> Lens ->
  modulate(mask) -> propagate_to_z (its automatic choice: angular spectrum, default padding) on
  the N x N pupil grid, intensity, normalised, central 256 x 256 window.
* capture16: the PSF above plus 16 linear convolutions of 256 x 256 x 3 scenes. Obscura: Camera
  forward (zero-padded FFT convolution, sensor noise and quantisation). torchoptics: its
  conv2d_fft on zero-padded scenes (no sensor model: torchoptics has none).
* propagate: one angular-spectrum propagation of an N x N field, 3 wavelengths, both with 2x
  zero padding (the like-for-like propagation kernel). Obscura caches transfer functions
  (training repeats the same propagation); propagate_uncached clears that cache every call.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from obscura.benchmark import emit  # noqa: E402
from optics.camera import Camera  # noqa: E402
from optics.optic import Optic  # noqa: E402
from optics.propagation import _transfer, angular_spectrum  # noqa: E402
from optics.sensor import Sensor  # noqa: E402
from optics.settings import MaskConfig, OpticConfig, SpectrumConfig  # noqa: E402

WAVELENGTHS = (640e-9, 550e-9, 440e-9)
APERTURE, FOCAL, PITCH, WINDOW, TERMS = 4e-3, 0.05, 3.713e-6, 256, 36


def timed(fn, repeats: int) -> float:
    """Median wall time of fn() in seconds, after one warm-up call (synchronised on CUDA)."""
    fn()
    times = []
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _sync() -> None:
    """Wait for queued GPU work so wall times are honest."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def obscura_camera(n: int, dtype: torch.dtype, device: torch.device) -> Camera:
    """Obscura camera: lens + 36-term Zernike mask on an n x n pupil, 3 wavelengths (one per channel)."""
    mask = MaskConfig(kind="zernike", num_terms=TERMS, init_rms_height_m=0.3e-6, seed=0)
    cfg = OpticConfig(
        pupil_samples=n, mask=mask, spectrum=SpectrumConfig(centres_m=list(WAVELENGTHS), samples_per_channel=1)
    )
    return Camera(Optic(cfg), Sensor(), noise_seed=0).to(device=device, dtype=dtype)


def torchoptics_psf_fn(camera: Camera, n: int, dtype: torch.dtype):
    """A function computing the same RGB PSF with torchoptics on the same n x n pupil grid."""
    import torchoptics
    from torchoptics.elements import Lens

    torchoptics.set_default_dtype(dtype)
    pupil_pitch = APERTURE / n
    lens = Lens((n, n), FOCAL, spacing=(pupil_pitch, pupil_pitch)).to(camera.optic.amplitude.device)
    amplitude = camera.optic.amplitude.to(dtype)

    def psf() -> torch.Tensor:
        channels = []
        for lam in WAVELENGTHS:
            phase = camera.optic.mask.phase(torch.tensor([lam], dtype=torch.float64, device=amplitude.device))[0].to(
                dtype
            )
            field = torchoptics.Field(torch.polar(amplitude, phase), wavelength=lam, spacing=(pupil_pitch, pupil_pitch))
            out = lens(field).propagate_to_z(FOCAL)
            intensity = out.intensity()
            c = n // 2
            lo, hi = max(c - WINDOW // 2, 0), min(c + WINDOW // 2, n)
            window = intensity[lo:hi, lo:hi]
            channels.append(window / window.sum())
        return torch.stack(channels)

    return psf


def linear_conv_torchoptics(images: torch.Tensor, psf: torch.Tensor) -> torch.Tensor:
    """Zero-padded ('same') convolution written with torchoptics.functional.conv2d_fft."""
    from torchoptics.functional import conv2d_fft

    h, w = psf.shape[-2:]
    padded = torch.nn.functional.pad(images, (w // 2, w - 1 - w // 2, h // 2, h - 1 - h // 2))
    return conv2d_fft(padded, psf[None]).real


def bench_grid(n: int, repeats: int, dtype: torch.dtype, device: torch.device) -> dict:
    """All measurements for one pupil grid size."""
    camera = obscura_camera(n, dtype, device)
    their_psf = torchoptics_psf_fn(camera, n, dtype)
    scenes = torch.rand(16, 3, 256, 256, generator=torch.Generator().manual_seed(0), dtype=dtype).to(device)
    complex_dtype = torch.complex64 if dtype == torch.float32 else torch.complex128
    field = torch.polar(camera.optic.amplitude.to(dtype), torch.zeros(n, n, dtype=dtype)).to(complex_dtype)
    pitch = APERTURE / n

    def ours_propagate() -> None:
        for lam in WAVELENGTHS:
            angular_spectrum(field, lam, 2e-3, pitch)

    def ours_propagate_uncached() -> None:
        _transfer.cache_clear()
        ours_propagate()

    def theirs_propagate() -> None:
        import torchoptics

        for lam in WAVELENGTHS:
            torchoptics.Field(field, wavelength=lam, spacing=(pitch, pitch)).propagate_to_z(
                2e-3, propagation_method="ASM", asm_pad=(n // 2, n // 2)
            )

    def ours_capture() -> None:
        camera(scenes)  # gradients on: the PSF is recomputed as in training

    def theirs_capture() -> None:
        linear_conv_torchoptics(scenes, their_psf())

    with torch.no_grad():
        rows = {
            "psf_rgb": (timed(lambda: camera.optic.psf(), repeats), timed(their_psf, repeats)),
            "propagate": (timed(ours_propagate, repeats), timed(theirs_propagate, repeats)),
        }
        rows["propagate_uncached"] = (timed(ours_propagate_uncached, repeats), rows["propagate"][1])
    rows["capture16"] = (timed(ours_capture, repeats), timed(lambda: torch.no_grad()(theirs_capture)(), repeats))
    return {
        name: {"obscura_s": round(a, 4), "torchoptics_s": round(b, 4), "speedup": round(b / a, 2)}
        for name, (a, b) in rows.items()
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (and optionally write) its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--grids", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    import torchoptics

    results = {
        "benchmark": "optics",
        "device": args.device,
        "threads": args.threads,
        "dtype": args.dtype,
        "cpu": platform.processor() or platform.machine(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "torchoptics": torchoptics.__version__,
        "psf_window": WINDOW,
        "grids": {},
    }
    for n in args.grids:
        results["grids"][str(n)] = bench_grid(n, args.repeats, dtype, torch.device(args.device))
        print(f"grid {n}: {json.dumps(results['grids'][str(n)])}", file=sys.stderr)
    emit(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
