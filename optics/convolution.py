"""Image formation: linear (zero-padded, not circular) convolution of a scene with a PSF."""

from __future__ import annotations

import scipy.fft
import torch
from torch import Tensor

from obscura.errors import ObscuraError


def check_images(images: Tensor, name: str = "scene") -> None:
    """An N x C x H x W floating-point tensor, or a one-line error naming what it got."""
    if not isinstance(images, Tensor):
        raise ObscuraError(f"{name} is a {type(images).__name__}; expected a torch.Tensor N x 3 x H x W")
    if not images.is_floating_point():
        raise ObscuraError(f"{name} has dtype {images.dtype}; expected float32 or float64 linear RGB in [0, 1]")
    if images.dim() != 4:
        raise ObscuraError(f"{name} has shape {tuple(images.shape)}; expected N x C x H x W")


def convolve(images: Tensor, psf: Tensor) -> Tensor:
    """Convolve N x C x H x W images with a C x h x w PSF (centre at (h//2, w//2)); output N x C x H x W.

    Both are zero-padded to (H + h - 1, W + w - 1) (rounded up to a fast FFT length) so light
    never wraps around the frame as it does with a circular convolution.
    """
    check_images(images)
    if psf.dim() != 3 or psf.shape[0] != images.shape[1]:
        raise ObscuraError(
            f"psf has shape {tuple(psf.shape)}; expected {images.shape[1]} x h x w to match the scene's channels"
        )
    (h_img, w_img), (h, w) = images.shape[-2:], psf.shape[-2:]
    size = (scipy.fft.next_fast_len(h_img + h - 1, real=True), scipy.fft.next_fast_len(w_img + w - 1, real=True))
    spectrum = torch.fft.rfft2(images, s=size) * torch.fft.rfft2(psf.to(images), s=size)
    full = torch.fft.irfft2(spectrum, s=size)
    return full[..., h // 2 : h // 2 + h_img, w // 2 : w // 2 + w_img]


def correlate(images: Tensor, psf: Tensor) -> Tensor:
    """The adjoint of `convolve` with the same PSF: <convolve(x, k), y> = <x, correlate(y, k)> for every x, y.

    It is the convolution with the PSF turned by 180 degrees about its centre (h//2, w//2); an even
    side puts that centre one sample off the turned array's, so a zero row/column in front restores it.
    """
    turned = psf.flip(-2, -1)
    h, w = psf.shape[-2:]
    return convolve(images, torch.nn.functional.pad(turned, (1 - w % 2, 0, 1 - h % 2, 0)))
