"""The simulated camera: optic (trainable) + sensor (fixed)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from obscura.errors import ObscuraError
from optics.convolution import check_images, convolve
from optics.optic import Optic
from optics.sensor import Sensor


class Camera(nn.Module):
    """scene (N x 3 x H x W linear RGB in [0, 1]) -> capture of the same shape, linear, in [0, 1].

    The trainable parameters are the optic's. `noise_seed` (or a `generator` passed to forward)
    makes the sensor noise reproducible; `sensor.noise = False` turns it off. Without gradients
    the PSF is cached until a parameter changes.
    """

    def __init__(self, optic: Optic, sensor: Sensor, noise_seed: int | None = None) -> None:
        super().__init__()
        self.optic = optic
        self.sensor = sensor
        self.noise_seed = noise_seed
        self._cache: tuple[tuple, Tensor] | None = None

    @property
    def noise(self) -> bool:
        """Whether the sensor adds shot and read noise."""
        return self.sensor.noise

    @noise.setter
    def noise(self, value: bool) -> None:
        self.sensor.noise = bool(value)

    def psf(self) -> Tensor:
        """The optic's PSF, 3 x h x w, each channel summing to 1."""
        if torch.is_grad_enabled():
            return self.optic.psf()
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in self.optic.parameters())
        key += (self.optic.amplitude.dtype, self.optic.amplitude.device)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self.optic.psf())
        return self._cache[1]

    def forward(
        self, scene_linear: Tensor, generator: torch.Generator | None = None, with_psf: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Blur the scene with the PSF (linear convolution), then digitise it on the sensor.

        With `with_psf` also the PSF itself: one forward, so a DistributedDataParallel wrapper sees
        the optic's parameters used once, by a trainer that also inverts its own capture.
        """
        check_images(scene_linear)
        if scene_linear.shape[1] != self.optic.channels:
            raise ObscuraError(
                f"scene has {scene_linear.shape[1]} channels; expected {self.optic.channels} (linear RGB)"
            )
        if generator is None and self.noise_seed is not None and self.sensor.noise:
            generator = torch.Generator(device=scene_linear.device).manual_seed(self.noise_seed)
        psf = self.psf().to(device=scene_linear.device, dtype=scene_linear.dtype)
        capture = self.sensor(convolve(scene_linear, psf), generator=generator)
        return (capture, psf) if with_psf else capture
