"""Stage-II losses as pure functions: StarGAN-v2's five, plus heatmap consistency and identity dissimilarity.

StarGAN-v2's: non-saturating adversarial, R1 on real images, style reconstruction,
diversity-sensitive, cycle. Ours: heatmap consistency between the source capture and the output
(with gradient: the reference computes it from a FAN under `no_grad`, so it never trains
anything) and identity dissimilarity to the source, measured by the stage-I adversary's
embedder (our training-time recogniser; never SFace or dlib, which judge the result).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def adversarial_d(real_logits: Tensor, fake_logits: Tensor) -> tuple[Tensor, Tensor]:
    """Discriminator's non-saturating loss terms: (softplus(-D(real)), softplus(D(fake))), batch means."""
    return F.softplus(-real_logits).mean(), F.softplus(fake_logits).mean()


def adversarial_g(fake_logits: Tensor) -> Tensor:
    """Generator's non-saturating loss: softplus(-D(fake)) = -log sigmoid(D(fake))."""
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_logits: Tensor, real_images: Tensor, gamma: float) -> Tensor:
    """Zero-centred gradient penalty on real images: gamma / 2 * E ||dD(x)/dx||^2 (Mescheder et al. 2018).

    `real_images` must require grad and `real_logits` be computed from them; the graph is kept
    (create_graph) so the penalty trains the discriminator. A discriminator that ignores its
    input has no gradient and no penalty.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True, allow_unused=True)
    if grad is None:
        return real_logits.sum() * 0.0
    return 0.5 * gamma * grad.pow(2).flatten(1).sum(dim=1).mean()


def style_reconstruction(style_of_output: Tensor, style: Tensor) -> Tensor:
    """L1 between the style the encoder reads back from the output and the style it was made with."""
    return (style_of_output - style).abs().mean()


def diversity(output: Tensor, output_other_style: Tensor) -> Tensor:
    """Mean L1 between two outputs of one source under two styles (the second detached, as the reference).

    The trainer subtracts it (weighted by `diversity_weight`): the generator is rewarded for
    making different styles look different.
    """
    return (output - output_other_style.detach()).abs().mean()


def diversity_weight(step: int, initial: float, decay_steps: int) -> float:
    """The diversity weight at a step: linear decay from `initial` to 0 over `decay_steps` (0: constant)."""
    if decay_steps <= 0:
        return initial
    return initial * max(0.0, 1.0 - step / decay_steps)


def cycle(reconstruction: Tensor, target: Tensor) -> Tensor:
    """L1 between G(output, style of the source) and the source.

    What "the source" is is the trainer's choice (`loss.cycle_target`). The reference Face-DeId
    cycles back to the *capture*: x_rec = G(x_fake, E(capture)) with no heatmap masks, compared
    with the capture (its `x_real` is the optical capture); that is our default ("capture").
    "clean" compares G(output, E(clean source)) with the clean source instead, StarGAN-v2's own
    form for clean inputs.
    """
    return (reconstruction - target).abs().mean()


def heatmap_consistency(
    regressor: nn.Module, output: Tensor, source_heatmaps: Tensor, reimage: Callable[[Tensor], Tensor] | None = None
) -> Tensor:
    """L1 between the frozen regressor's heatmaps of the output and those of the source capture, with gradient.

    `reimage` (the frozen stage-I camera) images the output first: the regressor was trained on
    captures, so the output is compared where the regressor is accurate. The regressor's weights
    should be frozen (requires_grad False); the gradient flows through it (and the camera) into
    the output and so into the generator. The source heatmaps are a target (detached).
    """
    seen = reimage(output) if reimage is not None else output
    return (regressor(seen) - source_heatmaps.detach()).abs().mean()


def identity_similarity(embedder: nn.Module, output: Tensor, clean_source: Tensor) -> Tensor:
    """Per-face cosine similarity between the recogniser's embeddings of the output and of the clean source."""
    with torch.no_grad():
        reference = embedder(clean_source)
    return F.cosine_similarity(embedder(output), reference, dim=1)


def identity_dissimilarity(similarity: Tensor, margin: float) -> Tensor:
    """Penalty on similarity above `margin`: mean relu(cos - margin); zero once the output is far enough."""
    return F.relu(similarity - margin).mean()
