"""Realism of generated faces: Frechet distances between feature distributions.

The Frechet distance between Gaussians fitted to two feature sets,
|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), is FID when the features are Inception-v3
pool features. The Inception weights (pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`)
cannot be downloaded here, so Inception FID runs only when the user passes that file; the
always-available figure uses SFace embeddings of real and generated faces instead.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from scipy import linalg

from obscura.errors import ObscuraError
from optics.image_io import from_uint8

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"  # the file pytorch-fid's fid_inception_v3() loads
Features = Callable[[np.ndarray], np.ndarray]  # N x H x W x 3 uint8 -> N x D


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to the rows of a and b (N x D each, N >= 2)."""

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ObscuraError(f"feature sets of shape {a.shape} and {b.shape}: expected N x D and M x D with N, M >= 2")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(s_a @ s_b)
    if not np.all(np.isfinite(root)):  # singular product: regularise as pytorch-fid does
        eps = 1e-6 * np.eye(a.shape[1])
        root = linalg.sqrtm((s_a + eps) @ (s_b + eps))
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a + s_b - 2.0 * np.real(root)))


def inception_features(weights: str | Path, batch_size: int = 32) -> Features:
    """Inception-v3 pool features (2048-d) with the pytorch-fid weights file the user supplies.

    pytorch-fid (optional extra `fid`) builds the network and would fetch the weights from the
    internet; pointing torch's hub cache at a folder holding the given file makes it load that
    file instead, so nothing is downloaded.
    """
    weights = Path(weights)
    if not weights.is_file():
        raise ObscuraError(f"Inception weights {weights}: file not found (expected pytorch-fid's {FID_WEIGHTS_NAME})")
    try:
        from pytorch_fid.inception import InceptionV3
    except ImportError:
        raise ObscuraError("Inception FID needs the pytorch-fid package: pip install 'obscura[fid]'") from None

    before = os.environ.get("TORCH_HOME")
    with tempfile.TemporaryDirectory(prefix="obscura-fid-") as hub:
        cached = Path(hub) / "hub" / "checkpoints" / FID_WEIGHTS_NAME
        cached.parent.mkdir(parents=True)
        cached.symlink_to(weights.resolve())
        os.environ["TORCH_HOME"] = hub
        try:
            model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
        finally:
            if before is None:
                os.environ.pop("TORCH_HOME", None)
            else:
                os.environ["TORCH_HOME"] = before
    return lambda images: torch_features(model, images, batch_size)


def torch_features(model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Run a torch feature network (input N x 3 x H x W in [0, 1]; output N x D or N x D x 1 x 1) over uint8 images."""

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = from_uint8(images[i : i + batch_size])
            y = model(x)
            y = y[0] if isinstance(y, (list, tuple)) else y
            out.append(y.reshape(y.shape[0], -1).double().numpy())
    return np.concatenate(out)
