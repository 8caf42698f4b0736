"""The training-time identity adversary: a small IResNet embedder with an ArcFace margin head.

It is trained here, on captures of the training identities only, and exists to give the optic a
differentiable measure of how much identity its captures still carry. It is never a judge:
privacy is reported by recognisers nobody here trained (SFace, dlib).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class IBasicBlock(nn.Module):
    """IResNet's pre-activation block: BN - conv - BN - PReLU - conv(stride) - BN, plus a shortcut."""

    def __init__(self, dim_in: int, dim_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(dim_in),
            nn.Conv2d(dim_in, dim_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(dim_out),
            nn.PReLU(dim_out),
            nn.Conv2d(dim_out, dim_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(dim_out),
        )
        self.shortcut = (
            nn.Identity()
            if dim_in == dim_out and stride == 1
            else nn.Sequential(nn.Conv2d(dim_in, dim_out, 1, stride=stride, bias=False), nn.BatchNorm2d(dim_out))
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.shortcut(x)


class IResNet(nn.Module):
    """sRGB image N x 3 x H x W in [0, 1] -> N x embedding_dim features (not normalised).

    Four stages of `blocks` IBasicBlocks, each halving the resolution; global average pooling
    keeps it size-agnostic, so it reads 128 x 128 captures directly. With `input_px` > 0 it first
    resizes every image to input_px x input_px (area-like antialiased bilinear, differentiable),
    so a recogniser trained at 64 px reads 128 px images at the scale it learned.
    """

    def __init__(self, width: int = 32, blocks: int = 1, embedding_dim: int = 128, input_px: int = 0) -> None:
        super().__init__()
        self.input_px = input_px
        widths = [width, width * 2, width * 4, width * 8]
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.PReLU(width))
        layers: list[nn.Module] = []
        dim = width
        for w in widths:
            layers.append(IBasicBlock(dim, w, 2))
            layers.extend(IBasicBlock(w, w, 1) for _ in range(blocks - 1))
            dim = w
        self.stages = nn.Sequential(*layers)
        self.neck = nn.Sequential(
            nn.BatchNorm2d(dim),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(dim, embedding_dim),
            nn.BatchNorm1d(embedding_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.input_px and x.shape[-2:] != (self.input_px, self.input_px):
            x = F.interpolate(
                x, size=(self.input_px, self.input_px), mode="bilinear", antialias=True, align_corners=False
            )
        return self.neck(self.stages(self.stem(x * 2.0 - 1.0)))


class ArcFaceHead(nn.Module):
    """Additive angular margin (ArcFace): logits s cos(theta_j), with theta_y + m for the true class.

    `margin_logits` is the training loss input; `logits` (no margin) is what the adversary
    believes at test time. Past theta_y > pi - m, where cos(theta + m) would stop decreasing,
    it falls back to the linear penalty cos(theta) - m sin(m) as in InsightFace.
    """

    def __init__(self, embedding_dim: int, num_classes: int, scale: float = 32.0, margin: float = 0.5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.normal_(self.weight, std=0.01)
        self.scale, self.margin = scale, margin

    def cosine(self, embedding: Tensor) -> Tensor:
        """N x classes cosine between normalised embeddings and class centres."""
        return F.linear(F.normalize(embedding), F.normalize(self.weight))

    def logits(self, embedding: Tensor) -> Tensor:
        """s cos(theta): the adversary's class scores without margin."""
        return self.scale * self.cosine(embedding)

    def margin_logits(self, embedding: Tensor, labels: Tensor) -> Tensor:
        """s cos(theta + m) for the true class, s cos(theta) for the others."""
        cos = self.cosine(embedding).clamp(-1.0, 1.0)
        sin = torch.sqrt((1.0 - cos * cos).clamp_min(1e-12))
        cos_m = cos * math.cos(self.margin) - sin * math.sin(self.margin)
        cos_m = torch.where(
            cos > math.cos(math.pi - self.margin), cos_m, cos - math.sin(math.pi - self.margin) * self.margin
        )
        target = F.one_hot(labels, cos.shape[1]).bool()
        return self.scale * torch.where(target, cos_m, cos)


class Adversary(nn.Module):
    """Embedder + ArcFace head over the training identities."""

    def __init__(
        self,
        num_classes: int,
        width: int = 32,
        blocks: int = 1,
        embedding_dim: int = 128,
        scale: float = 32.0,
        margin: float = 0.5,
        input_px: int = 0,
    ) -> None:
        super().__init__()
        self.embedder = IResNet(width, blocks, embedding_dim, input_px)
        self.head = ArcFaceHead(embedding_dim, num_classes, scale, margin)

    def forward(self, images: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(s cos theta, the ArcFace training logits) for a batch; without labels both are s cos theta.

        One forward returning both keeps DistributedDataParallel's gradient hooks on every parameter.
        """
        emb = self.embedder(images)
        logits = self.head.logits(emb)
        return logits, (logits if labels is None else self.head.margin_logits(emb, labels))


def arcface_loss(margin_logits: Tensor, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """The adversary's own loss (ArcFace cross-entropy) and its margin-free top-1 accuracy."""
    accuracy = (logits.argmax(dim=1) == labels).float().mean()
    return F.cross_entropy(margin_logits, labels), accuracy.detach()


def identity_information(logits: Tensor) -> Tensor:
    """KL(uniform || adversary posterior) in nats, averaged over the batch: the optic's privacy loss.

    Why this and not the adversary's negative cross-entropy: maximising cross-entropy is unbounded
    and is "won" by captures the adversary confidently assigns to a *wrong* identity, which still
    carry identity (a consistent relabelling). KL(U || p) = -log K - mean_j log p_j is >= 0 and
    zero exactly when the adversary's posterior over the K training identities is uniform, i.e.
    when it extracts nothing; it does not need the true label (the maximum-entropy confusion loss
    of adversarial privacy / domain confusion, Tzeng et al. 2015).
    """
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.mean(dim=1) + math.log(logits.shape[1])).mean()


def information_bound(logits: Tensor, labels: Tensor) -> Tensor:
    """log K - CE: the Barber-Agakov lower bound on I(identity; capture) in nats (a reported metric)."""
    return math.log(logits.shape[1]) - F.cross_entropy(logits, labels)
