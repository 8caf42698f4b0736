"""The template decoder of the WIFS 2023 inversion attack, scaled to CPU: a face template -> the 112 x 112 face it came from.

The template (D values) is read as a D x 1 x 1 image and grown by six ConvTranspose stages
(1 -> 3 -> 7 -> 14 -> 28 -> 56 -> 112 px), each followed by three conv3x3 + BatchNorm + ReLU,
then a 1 x 1 convolution to RGB and a sigmoid. The paper's widths are larger; `widths` sets
them. One addition for CPU budgets: a linear path from the template to a 56 x 56 image of
logits (bilinearly enlarged), added before the sigmoid and started as the ridge regression of
the training faces on their templates, with the convolutional path's last layer started at
zero. The decoder then begins at the best linear rebuild (the mean face, pose, skin, lighting)
instead of grey, which a 1 x 1 input through six stages takes thousands of steps to reach. Its loss: MSE + 0.1 (1 - SSIM) + 0.005 identity loss (here 1 - the cosine between the
inverted recogniser's template of the rebuilt face and the face's clean template).
"""

from __future__ import annotations

from typing import Any

import torch
from pytorch_msssim import ssim
from torch import Tensor, nn
from torch.nn import functional as F

from anonymizer import checkpoint
from obscura.errors import ObscuraError

FORMAT = "obscura-template-decoder"
# (kernel, stride, padding) of the six ConvTranspose stages: 1 -> 3 -> 7 -> 14 -> 28 -> 56 -> 112
STAGES = ((3, 1, 0), (3, 2, 0), (4, 2, 1), (4, 2, 1), (4, 2, 1), (4, 2, 1))
DEFAULT_WIDTHS = (128, 128, 64, 32, 16, 8)
PRIOR_PX = 56  # the linear path's image side (enlarged to 112)
RIDGE = 1e-2  # the linear path's ridge weight, relative to the mean diagonal of the templates' Gram matrix


class UpStage(nn.Module):
    """ConvTranspose2d up-sampling, then three conv3x3 + BatchNorm + ReLU."""

    def __init__(self, dim_in: int, dim_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.ConvTranspose2d(dim_in, dim_out, kernel, stride, padding)]
        for _ in range(3):
            layers += [nn.Conv2d(dim_out, dim_out, 3, padding=1, bias=False), nn.BatchNorm2d(dim_out), nn.ReLU(True)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class TemplateDecoder(nn.Module):
    """N x D templates -> N x 3 x 112 x 112 faces in [0, 1]."""

    def __init__(self, dim: int = 128, widths: tuple[int, ...] = DEFAULT_WIDTHS) -> None:
        super().__init__()
        if len(widths) != len(STAGES):
            raise ObscuraError(f"config key 'widths' is {list(widths)}; expected {len(STAGES)} channel counts")
        self.dim, self.widths = dim, tuple(widths)
        dims = (dim, *widths)
        self.stages = nn.Sequential(*(UpStage(dims[i], dims[i + 1], *STAGES[i]) for i in range(len(STAGES))))
        self.to_rgb = nn.Conv2d(widths[-1], 3, 1)
        nn.init.zeros_(self.to_rgb.weight)
        nn.init.zeros_(self.to_rgb.bias)
        self.linear = nn.Linear(dim, 3 * PRIOR_PX * PRIOR_PX)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, template: Tensor) -> Tensor:
        prior = self.linear(template).view(-1, 3, PRIOR_PX, PRIOR_PX)
        prior = F.interpolate(prior, scale_factor=2, mode="bilinear", align_corners=False)
        return (prior + self.to_rgb(self.stages(template.view(-1, self.dim, 1, 1)))).sigmoid()

    @torch.no_grad()
    def fit_linear(self, templates: Tensor, faces: Tensor) -> None:
        """Start the linear path as the ridge regression of the faces' logits (uint8 N x 112 x 112 x 3) on their templates."""
        chunks = [
            F.interpolate(faces[i : i + 512].movedim(-1, 1).float() / 255.0, size=(PRIOR_PX, PRIOR_PX), mode="area")
            for i in range(0, len(faces), 512)
        ]
        y = torch.logit(torch.cat(chunks).clamp(0.02, 0.98)).flatten(1).double()
        x = templates.double()
        x_mean, y_mean = x.mean(0), y.mean(0)
        xc = x - x_mean
        gram = xc.T @ xc
        w = torch.linalg.solve(
            gram + RIDGE * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype), xc.T @ (y - y_mean)
        )
        self.linear.weight.copy_(w.T.float())
        self.linear.bias.copy_((y_mean - x_mean @ w).float())


def pixel_losses(rebuilt: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """MSE and 1 - SSIM (11 x 11 Gaussian window, data range 1) between rebuilt and true faces."""
    return F.mse_loss(rebuilt, target), 1.0 - ssim(rebuilt, target, data_range=1.0, size_average=True)


def save_decoder(path: Any, decoder: TemplateDecoder, info: dict[str, Any]) -> None:
    """A decoder file (atomic, checksummed): its shape, weights and how it was made."""
    checkpoint.save(
        path,
        {
            "format": FORMAT,
            "dim": decoder.dim,
            "widths": list(decoder.widths),
            "info": info,
            "state_dict": decoder.state_dict(),
        },
    )


def load_decoder(path: Any) -> tuple[TemplateDecoder, dict[str, Any]]:
    """A decoder file's network (eval mode) and its info (recogniser, protection, training)."""
    state = checkpoint.load(path)
    if state.get("format") != FORMAT:
        raise ObscuraError(
            f"--decoder {path}: not a template decoder (format {state.get('format')!r}; expected {FORMAT!r})"
        )
    decoder = TemplateDecoder(int(state["dim"]), tuple(state["widths"]))
    decoder.load_state_dict(state["state_dict"])
    return decoder.eval(), dict(state["info"])
