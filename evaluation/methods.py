"""The registry of methods under test: name -> function from a clean RGB image to its output.

Every method maps an sRGB uint8 HxWx3 image to one of the same size. Image-space baselines work
on the sRGB values directly; optical baselines decode sRGB to linear light, image through an
`optics.presets` camera, and encode back to sRGB. Each method also states its forward model: the
differentiable linear operator an attacker who knows the method would invert (a PSF convolution
in linear light for optics; the sRGB-space operator for the image-space baselines).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from anonymizer import runs
from anonymizer.learned_optic import load_learned_optic, regressor_landmarks
from anonymizer.nets.regressor import load_regressor
from obscura import paths
from obscura.digest import bytes_sha256, file_sha256
from obscura.errors import ObscuraError
from optics import presets
from optics.camera import Camera
from optics.convolution import convolve
from optics.image_io import from_uint8, to_uint8
from optics.sensor import Sensor
from optics.srgb_capture import SrgbImaging, capture_uint8, psf_imaging
from protect import registry as protections

OPTICAL_SEED = 0  # the random Zernike optic is drawn once from this seed, so runs agree


@dataclass(frozen=True)
class ForwardModel:
    """A method as the linear operator an attacker who knows it inverts: N x 3 x H x W -> N x 3 x H x W, differentiable.

    `domain` says where it is linear: "linear" light for optics (the PSF convolution; sensor noise
    and quantisation are what the inversion must cope with), "srgb" values for image-space baselines.
    """

    apply: Callable[[Tensor], Tensor]
    domain: Literal["linear", "srgb"]
    # optics only: the C x h x w PSF itself, for attackers that need the kernel rather than the operator (ADMM)
    psf: Callable[[], Tensor] | None = None


@dataclass(frozen=True)
class Method:
    """A named image transform and the key under which its per-image results may be cached."""

    name: str
    apply: Callable[[np.ndarray], np.ndarray]
    cache_key: str
    description: str
    # For capture methods with a heatmap regressor: output image -> 68 x 2 landmarks (x, y), pixels.
    landmarks: Callable[[np.ndarray], np.ndarray] | None = None
    forward: ForwardModel | None = None  # None: no linear model (the clean image)

    @property
    def is_identity(self) -> bool:
        """True for `clean`, whose outputs are the source images themselves."""
        return self.name == "clean"


def lowres(image: np.ndarray, n: int) -> np.ndarray:
    """Area-downsample the whole image to n x n, then bilinear back to its size."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (n, n), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def gaussian_blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur of standard deviation `sigma_px` (kernel to +-4 sigma, edges reflected)."""
    k = 2 * int(np.ceil(4 * sigma_px)) + 1
    return cv2.GaussianBlur(image, (k, k), sigmaX=sigma_px, sigmaY=sigma_px, borderType=cv2.BORDER_REFLECT_101)


def pixelate(image: np.ndarray, block_px: int) -> np.ndarray:
    """Mosaic: every block_px x block_px block (from the top-left) replaced by its mean colour."""
    h, w = image.shape[:2]
    out = np.empty_like(image)
    for y in range(0, h, block_px):
        for x in range(0, w, block_px):
            block = image[y : y + block_px, x : x + block_px]
            out[y : y + block_px, x : x + block_px] = np.round(block.reshape(-1, image.shape[2]).mean(0))
    return out


def lowres_forward(n: int) -> ForwardModel:
    """`lowres` as a torch operator: area average to n x n, bilinear back (half-pixel centres, as OpenCV)."""

    def apply(x: Tensor) -> Tensor:
        return F.interpolate(F.adaptive_avg_pool2d(x, n), size=x.shape[-2:], mode="bilinear", align_corners=False)

    return ForwardModel(apply, "srgb")


def blur_forward(sigma_px: float) -> ForwardModel:
    """`gaussian_blur` as a torch operator: the same kernel, edges reflected."""
    half = int(np.ceil(4 * sigma_px))
    taps = torch.exp(-(torch.arange(-half, half + 1, dtype=torch.float64) ** 2) / (2 * sigma_px**2))
    taps = (taps / taps.sum()).float()

    def apply(x: Tensor) -> Tensor:
        c = x.shape[1]
        padded = F.pad(x, (half, half, half, half), mode="reflect")
        rows = F.conv2d(padded, taps.to(x).view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(rows, taps.to(x).view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)

    return ForwardModel(apply, "srgb")


def pixelate_forward(block_px: int) -> ForwardModel:
    """`pixelate` as a torch operator: block means from the top-left (partial blocks at the edges averaged alone)."""

    def apply(x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        means = F.avg_pool2d(x, block_px, ceil_mode=True)
        return means.repeat_interleave(block_px, dim=-2).repeat_interleave(block_px, dim=-1)[..., :h, :w]

    return ForwardModel(apply, "srgb")


def psf_forward(psf: Callable[[], Tensor]) -> ForwardModel:
    """An optic as a torch operator: the linear (zero-padded) convolution with its PSF (computed once) in linear light."""
    kept: list[Tensor] = []

    def kernel() -> Tensor:
        if not kept:
            with torch.no_grad():
                kept.append(psf().detach())
        return kept[0]

    def apply(x: Tensor) -> Tensor:
        return convolve(x, kernel().to(x))

    return ForwardModel(apply, "linear", kernel)


class PresetCamera:
    """An optics.presets camera built on first use (a PSF takes a while), shared by a method's image function and forward model."""

    def __init__(self, preset: str, seed: int) -> None:
        self.preset, self.seed = preset, seed
        self._camera: Camera | None = None

    @property
    def camera(self) -> Camera:
        """The camera, in eval mode."""
        if self._camera is None:
            self._camera = presets.camera_from_spec(self.preset, seed=self.seed).eval()
        return self._camera

    def apply(self, image: np.ndarray) -> np.ndarray:
        """sRGB -> linear -> camera -> sRGB."""
        return capture_uint8(self.camera, image)

    def psf(self) -> Tensor:
        """The camera's PSF."""
        return self.camera.psf()


def optical(preset: str, description: str, seed: int = OPTICAL_SEED) -> Method:
    """An optics.presets camera as a method, with its PSF as the forward model."""
    camera = PresetCamera(preset, seed)
    return Method(preset, camera.apply, preset, description, forward=psf_forward(camera.psf))


def psf_method(psf: torch.Tensor, name: str, sensor_seed: int = 0) -> Method:
    """Imaging through a given PSF (C x h x w) and the default sensor, e.g. an as-built optic's.

    Evaluating it next to the design optic gives the change in the privacy and utility figures
    that fabrication errors cause.
    """
    kernel = psf.detach().float().cpu()
    imaging = psf_imaging(kernel, Sensor())

    def apply(image: np.ndarray) -> np.ndarray:
        return capture_uint8(imaging, image, torch.Generator().manual_seed(sensor_seed))

    digest = bytes_sha256(kernel.numpy().tobytes())[:12]
    return Method(
        name, apply, f"{name}-{digest}", f"imaging through the {name} PSF", forward=psf_forward(lambda: kernel)
    )


_FIXED: dict[str, Callable[[], Method]] = {
    "clean": lambda: Method("clean", lambda im: im, "clean", "the source image unchanged"),
    **{
        f"lowres{n}": lambda n=n: Method(
            f"lowres{n}",
            lambda im: lowres(im, n),
            f"lowres{n}",
            f"area-downsampled to {n}x{n}, bilinear back",
            forward=lowres_forward(n),
        )
        for n in (8, 12, 16, 32)
    },
    **{
        f"blur{s}": lambda s=s: Method(
            f"blur{s}",
            lambda im: gaussian_blur(im, float(s)),
            f"blur{s}",
            f"Gaussian blur, sigma {s} px",
            forward=blur_forward(float(s)),
        )
        for s in (2, 4, 8)
    },
    "pixelate16": lambda: Method(
        "pixelate16",
        lambda im: pixelate(im, 16),
        "pixelate16",
        "mosaic of 16x16-px blocks, each its mean colour",
        forward=pixelate_forward(16),
    ),
    "defocus": lambda: optical("defocus", "defocused thin lens through optics.presets ('defocus')"),
    "zernike-random": lambda: optical(
        "zernike-random", f"random Zernike phase optic through optics.presets ('zernike-random', seed {OPTICAL_SEED})"
    ),
}


def learned_optic(spec: str) -> Method:
    """`optic` (the committed stage-I optic and regressor in weights/) or `optic:PATH` (a stage-I output or optic .npz)."""
    path = spec.partition(":")[2] or str(paths.WEIGHTS_DIR / runs.OPTIC)
    learned = load_learned_optic(path)
    return Method(
        spec,
        learned.capture,
        learned.key,
        f"the learned optic {path} (stage I), seeded sensor noise",
        landmarks=learned.landmarks,
        forward=psf_forward(learned.camera.psf),
    )


def psf_file(spec: str) -> Method:
    """`psf:FILE`: imaging through a PSF saved as .npy (C x h x w), e.g. an as-built optic's from `simulate.py tolerance`.

    Landmarks come from the stage-I regressor beside the file, else the committed one, so the
    regressor's NME under fabrication errors is reported next to privacy.
    """
    path = Path(spec.partition(":")[2])
    try:
        psf = np.load(path)
    except (OSError, ValueError) as err:
        raise ObscuraError(
            f"--method {spec}: cannot read a PSF from {path} ({err}); expected a .npy array C x h x w"
        ) from None
    if psf.ndim != 3 or psf.shape[0] != 3 or not np.all(np.isfinite(psf)) or np.any(psf.sum(axis=(1, 2)) <= 0):
        raise ObscuraError(f"--method {spec}: PSF has shape {psf.shape}; expected a finite, non-zero 3 x h x w array")
    method = psf_method(torch.from_numpy(psf / psf.sum(axis=(1, 2), keepdims=True)), f"psf:{path.name}")
    regressor = next(
        (r for r in (path.parent / runs.REGRESSOR, paths.WEIGHTS_DIR / runs.REGRESSOR) if r.is_file()), None
    )
    if regressor is None:
        return method
    model, size = load_regressor(regressor)
    return Method(
        spec,
        method.apply,
        f"{method.cache_key}-{file_sha256(regressor)[:12]}",
        f"{method.description}; landmarks by {regressor}",
        landmarks=lambda capture: regressor_landmarks(model, size, capture),
        forward=method.forward,
    )


def names() -> list[str]:
    """Method names accepted by --method (protections take options: NAME:key=value,...)."""
    return list(_FIXED) + protections.names()


def protection(spec: str) -> Method:
    """A software protection (protect/) as a method: no linear forward model, cached by its resolved options."""
    p = protections.get(spec)
    if p.per_user is not None:
        raise ObscuraError(
            f"--method {spec!r}: a per-user protection (learned from each user's images) is not an image method; "
            "judge it with `judge-p3mask`"
        )
    return Method(spec, p.apply, p.cache_key, p.description)


def get(name: str) -> Method:
    """Look up a method by name; an unknown name is a one-line error listing the known ones."""
    if name in _FIXED:
        return _FIXED[name]()
    if name == "optic" or name.startswith("optic:"):
        return learned_optic(name)
    if name.startswith("psf:"):
        return psf_file(name)
    if protections.is_protection(name):
        return protection(name)
    raise ObscuraError(
        f"--method {name!r}: unknown method (expected one of: {', '.join(names())}, optic, optic:PATH, psf:FILE.npy)"
    )


def method_imaging(name: str) -> SrgbImaging:
    """A method's output on an sRGB batch N x 3 x H x W, image by image through uint8 (as evaluation sees it)."""
    method = get(name)
    return lambda images, generator: from_uint8(np.stack([method.apply(x) for x in to_uint8(images)]))
