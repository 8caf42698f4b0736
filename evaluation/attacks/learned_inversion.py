"""A learned inversion of a capture method: ridge regression from captures to clean faces, refined by a small U-Net.

The attacker images the training identities' faces through the method (it knows the method
and the distribution of faces, not the people it will be judged on) and learns to rebuild the
clean face from the capture at `size` x `size`:
1. kernel ridge regression (the dual form of a linear map, exact for any linear method plus a
   face prior learned from the data): rebuild = mean + k(capture, training captures) alpha,
   with the ridge weight chosen on held-out training identities;
2. a U-Net refining the ridge rebuild (residual), trained on ridge rebuilds cross-fitted by
   identity (each half predicted by a ridge fitted on the other half, as unseen faces would be),
   with an L1 loss and optionally an identity term: the cosine between an in-house recogniser's
   embeddings of the rebuild and of the clean face (a clean-face recogniser of the training
   identities; `runs.load_embedder` refuses one that saw anyone else).
`python simulate.py attack-reconstruct --method NAME --out DIR` trains it and writes inversion.pt,
which `evaluate --set "reconstruction=[tikhonov, learned:DIR/inversion.pt]"` uses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm import tqdm

from anonymizer import checkpoint, runs
from evaluation import methods
from faces.face_sets import load_face_set, read_rgb, read_split, resolve_root
from obscura import atomic, config
from obscura.config import bounded
from obscura.digest import file_sha256
from obscura.errors import ObscuraError
from optics.image_io import from_uint8, to_uint8

FORMAT = "obscura-learned-inversion"
INVERSION_FILE = "inversion.pt"
ARRAYS_FILE = "arrays.npz"


class ConvBlock(nn.Module):
    """Two 3x3 conv + GroupNorm + LeakyReLU layers."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(dim_in, dim_out, 3, padding=1),
            nn.GroupNorm(8, dim_out),
            nn.LeakyReLU(0.2),
            nn.Conv2d(dim_out, dim_out, 3, padding=1),
            nn.GroupNorm(8, dim_out),
            nn.LeakyReLU(0.2),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class RefineUNet(nn.Module):
    """sRGB rebuild N x 3 x S x S in [0, 1] -> a refined one: the input plus a U-Net's residual (S divisible by 2^depth)."""

    def __init__(self, width: int = 32, depth: int = 3) -> None:
        super().__init__()
        widths = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList(
            [ConvBlock(3, widths[0])] + [ConvBlock(widths[i], widths[i + 1]) for i in range(depth)]
        )
        self.up = nn.ModuleList(ConvBlock(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], 3, 1)

    def forward(self, x: Tensor) -> Tensor:
        skips, h = [], x * 2.0 - 1.0
        for i, block in enumerate(self.down):
            h = block(h if i == 0 else F.avg_pool2d(h, 2))
            skips.append(h)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            h = block(
                torch.cat([F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1)
            )
        return (x + self.head(h)).clamp(0, 1)


@dataclass
class InversionConfig:
    """Everything that decides a learned inversion; written resolved next to it."""

    method: str = "optic"
    run: str = runs.STAGE1_WEIGHTS  # the stage-I result whose identity split says who the training identities are
    data: str = "celeba-crops"  # the face set (a folder, or a name under the shared data folder)
    size: int = bounded(96, ge=16)  # rebuild side in pixels (a multiple of 8)
    max_images: int = bounded(0, ge=0)  # 0: every image of the training identities
    holdout: float = bounded(0.1, gt=0, lt=0.5)  # share of training identities held out to choose the ridge weight
    ridge_grid: list[float] = field(default_factory=lambda: [1e-2, 1e-1, 1.0, 10.0, 100.0])
    unet_steps: int = bounded(1500, ge=0)  # 0: the ridge alone
    batch_size: int = bounded(16, ge=1)
    lr: float = bounded(1e-3, gt=0)
    identity_weight: float = bounded(0.0, ge=0)
    identity_recogniser: str = ""  # an attacker.pt of the training identities (clean faces) for the identity term
    checkpoint_every: int = bounded(250, ge=1)
    seed: int = 0
    threads: int = bounded(0, ge=0)
    progress: bool = True


@dataclass
class Ridge:
    """Dual ridge regression from flattened captures to flattened clean faces."""

    x_mean: Tensor
    y_mean: Tensor
    train_x: Tensor  # N x D centred training captures
    alpha: Tensor  # N x D' dual coefficients

    @classmethod
    def fit(cls, x: Tensor, y: Tensor, lam: float) -> Ridge:
        """Fit on N x D captures and N x D' clean faces (float64 inside for the solve)."""
        x_mean, y_mean = x.mean(0), y.mean(0)
        xc = (x - x_mean).double()
        gram = xc @ xc.T
        alpha = torch.linalg.solve(
            gram + lam * gram.diagonal().mean() * torch.eye(len(x), dtype=gram.dtype), (y - y_mean).double()
        )
        return cls(x_mean, y_mean, xc.float(), alpha.float())

    def predict(self, x: Tensor) -> Tensor:
        """Rebuilds N x D' of captures N x D."""
        return self.y_mean + ((x - self.x_mean) @ self.train_x.T) @ self.alpha


def check(cfg: InversionConfig) -> methods.Method:
    """Refuse a bad configuration before any image is read; returns the method."""
    config.check(cfg)
    if cfg.size % 8:
        raise ObscuraError(
            f"config key 'size' is {cfg.size}; expected a multiple of 8 (the U-Net halves it three times)"
        )
    if not cfg.ridge_grid or min(cfg.ridge_grid) <= 0:
        raise ObscuraError(f"config key 'ridge_grid' is {cfg.ridge_grid}; expected positive ridge weights")
    if cfg.identity_weight and not Path(cfg.identity_recogniser).is_file():
        raise ObscuraError(
            f"config key 'identity_recogniser' is {cfg.identity_recogniser!r}: expected an attacker.pt "
            "(a clean-face recogniser of the training identities) for identity_weight > 0"
        )
    try:
        return methods.get(cfg.method)
    except ObscuraError as err:
        raise ObscuraError(f"config key 'method': {err}") from None


def shrink(images: Tensor, size: int) -> Tensor:
    """Images to size x size by area averaging (what a rebuild at that size can hold)."""
    return F.interpolate(images, size=(size, size), mode="area") if images.shape[-1] != size else images


def training_arrays(cfg: InversionConfig, method: methods.Method, out: Path) -> dict[str, np.ndarray]:
    """Captures and clean faces (uint8, size x size) of the training identities' images, with identity labels; cached in out."""
    cached = out / ARRAYS_FILE
    if cached.is_file():
        with np.load(cached) as data:
            return {k: data[k] for k in data.files}
    identities = read_split(runs.stage1_folder(cfg.run) / runs.TRAIN_SPLIT)
    face_set = load_face_set(resolve_root(cfg.data), 2, identities=identities, progress=cfg.progress)
    images = [img for name in face_set.identities for img in face_set.images[name]]
    if cfg.max_images:
        images = images[:: max(1, len(images) // cfg.max_images)][: cfg.max_images]
    captures, cleans, labels = [], [], []
    for img in tqdm(images, desc=f"captures ({method.name})", disable=not cfg.progress):
        rgb, _ = read_rgb(img.path)
        pair = from_uint8(np.stack([method.apply(rgb), rgb]))
        small = to_uint8(shrink(pair, cfg.size))
        captures.append(small[0])
        cleans.append(small[1])
        labels.append(face_set.identities.index(img.identity))
    arrays = {"captures": np.stack(captures), "cleans": np.stack(cleans), "labels": np.array(labels)}
    with atomic.atomic_path(cached) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    return arrays


def flat(images: np.ndarray) -> Tensor:
    """uint8 N x S x S x 3 -> N x 3 S S floats in [0, 1]."""
    return from_uint8(images).flatten(1)


def fit_ridge(arrays: dict[str, np.ndarray], cfg: InversionConfig) -> tuple[Ridge, dict[str, float]]:
    """The ridge weight chosen on held-out identities (PSNR), then the ridge fitted on every training identity."""
    x, y, labels = flat(arrays["captures"]), flat(arrays["cleans"]), arrays["labels"]
    ids = np.random.default_rng(cfg.seed).permutation(labels.max() + 1)
    held = torch.from_numpy(np.isin(labels, ids[: max(1, int(round(cfg.holdout * len(ids))))]))
    scores = {}
    for lam in cfg.ridge_grid:
        pred = Ridge.fit(x[~held], y[~held], lam).predict(x[held]).clamp(0, 1)
        scores[f"{lam:g}"] = float((-10 * torch.log10((pred - y[held]).pow(2).mean(1).clamp_min(1e-10))).mean())
    best = max(cfg.ridge_grid, key=lambda lam: scores[f"{lam:g}"])
    return Ridge.fit(x, y, best), {"lambda": best, "heldout_psnr_db": scores}


def cross_fitted(arrays: dict[str, np.ndarray], lam: float) -> Tensor:
    """Ridge rebuilds of every training image by a ridge fitted on the other half of the identities."""
    x, y, labels = flat(arrays["captures"]), flat(arrays["cleans"]), arrays["labels"]
    half = torch.from_numpy(labels % 2 == 0)
    out = torch.empty_like(y)
    for part in (half, ~half):
        out[part] = Ridge.fit(x[~part], y[~part], lam).predict(x[part]).clamp(0, 1)
    return out


def identity_embedder(cfg: InversionConfig) -> nn.Module | None:
    """The in-house clean-face recogniser of the training identities for the identity term, frozen (None without one)."""
    if not cfg.identity_weight:
        return None
    folder = runs.stage1_folder(cfg.run)
    embedder = runs.load_embedder(
        Path(cfg.identity_recogniser), runs.load_stage1_config(folder), read_split(folder / runs.TRAIN_SPLIT)
    )
    return embedder.eval().requires_grad_(False)


def train_unet(
    rebuilds: Tensor, arrays: dict[str, np.ndarray], cfg: InversionConfig, out: Path
) -> tuple[RefineUNet, list[dict]]:
    """The refining U-Net on cross-fitted ridge rebuilds; resumes from out/checkpoints."""
    torch.manual_seed(cfg.seed)
    unet = RefineUNet()
    opt = torch.optim.Adam(unet.parameters(), lr=cfg.lr)
    embedder = identity_embedder(cfg)
    inputs = rebuilds.view(-1, 3, cfg.size, cfg.size)
    targets = from_uint8(arrays["cleans"])
    folder, start, history = out / runs.CHECKPOINTS, 0, []
    found = checkpoint.latest(folder)
    if found is not None:
        unet.load_state_dict(found[1]["unet"])
        opt.load_state_dict(found[1]["opt"])
        start, history = int(found[1]["step"]), list(found[1]["history"])
    bar = tqdm(total=cfg.unet_steps, initial=start, desc="refining U-Net", disable=not cfg.progress)
    for step in range(start, cfg.unet_steps):
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randint(len(inputs), (cfg.batch_size,), generator=g)
        flip = torch.rand(cfg.batch_size, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], inputs[idx].flip(-1), inputs[idx])
        y = torch.where(flip[:, None, None, None], targets[idx].flip(-1), targets[idx])
        pred = unet(x)
        l1 = (pred - y).abs().mean()
        cosine = (
            F.cosine_similarity(embedder(pred), embedder(y), dim=1).mean() if embedder is not None else torch.zeros(())
        )
        loss = l1 + cfg.identity_weight * (1.0 - cosine)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append({"step": step + 1, "l1": l1.item(), "identity_cosine": cosine.item()})
        bar.set_postfix(l1=f"{l1.item():.4f}", cos=f"{cosine.item():.2f}")
        bar.update(1)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.unet_steps:
            checkpoint.save_step(
                folder,
                step + 1,
                {"step": step + 1, "unet": unet.state_dict(), "opt": opt.state_dict(), "history": history},
            )
    bar.close()
    return unet.eval(), history


@dataclass
class LearnedInversion:
    """A trained inversion of one method: ridge, then (if trained) the refining U-Net; rebuilds at `size` and resizes back."""

    method: str
    size: int
    ridge: Ridge
    unet: RefineUNet | None
    key: str = ""  # the file's SHA-256 (prefix), for the evaluation's result cache
    name: str = "learned"

    @property
    def cache_key(self) -> str:
        """Identifies the inversion's weights, for the evaluation's result cache."""
        return f"learned-{self.key}"

    def rebuild_batch(self, captures: Tensor) -> Tensor:
        """sRGB [0, 1] captures N x 3 x H x W -> rebuilt sRGB [0, 1] faces of the same size."""
        with torch.no_grad():
            small = shrink(captures, self.size)
            rebuilt = self.ridge.predict(small.flatten(1)).clamp(0, 1).view_as(small)
            if self.unet is not None:
                rebuilt = self.unet(rebuilt)
            return F.interpolate(rebuilt, size=captures.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)

    def rebuild(self, capture: np.ndarray) -> np.ndarray:
        """sRGB uint8 capture -> rebuilt sRGB uint8 face."""
        return to_uint8(self.rebuild_batch(from_uint8(capture)[None])[0])

    def save(self, path: Path, info: dict[str, Any]) -> Path:
        """inversion.pt: the ridge (float16) and the U-Net, with how they were made (checksummed)."""
        state = {
            "format": FORMAT,
            "method": self.method,
            "size": self.size,
            "info": info,
            "ridge": {k: getattr(self.ridge, k).half() for k in ("x_mean", "y_mean", "train_x", "alpha")},
            "unet": None if self.unet is None else self.unet.state_dict(),
        }
        return checkpoint.save(path, state)

    @classmethod
    def load(cls, path: str | Path, method: str) -> LearnedInversion:
        """Read an inversion.pt, refusing one trained on another method's captures."""
        state = checkpoint.load(path)
        if state.get("format") != FORMAT:
            raise ObscuraError(f"{path}: not a learned inversion (format {state.get('format')!r}; expected {FORMAT!r})")
        if state["method"] != method:
            raise ObscuraError(f"{path} was trained on captures of {state['method']!r}, not of {method!r}")
        ridge = Ridge(**{k: v.float() for k, v in state["ridge"].items()})
        unet = None
        if state["unet"] is not None:
            unet = RefineUNet()
            unet.load_state_dict(state["unet"])
            unet.eval()
        return cls(method, int(state["size"]), ridge, unet, file_sha256(path)[:16])


def examples_png(path: Path, inversion: LearnedInversion, arrays: dict[str, np.ndarray], count: int = 6) -> Path:
    """Clean, capture and rebuild of a few held-out-like training faces (every n-th image)."""
    matplotlib.use("Agg")
    picks = np.linspace(0, len(arrays["cleans"]) - 1, count).round().astype(int)
    rebuilt = to_uint8(inversion.rebuild_batch(from_uint8(arrays["captures"][picks])))
    fig, axes = plt.subplots(3, count, figsize=(1.8 * count, 5.6), squeeze=False)
    for col, k in enumerate(picks):
        for row, (img, title) in enumerate(
            ((arrays["cleans"][k], "clean"), (arrays["captures"][k], "capture"), (rebuilt[col], "rebuilt"))
        ):
            axes[row, col].imshow(img)
            axes[row, col].axis("off")
            if col == 0:
                axes[row, col].set_title(title, fontsize=8, loc="left")
    fig.suptitle(
        f"learned inversion of {inversion.method} (training faces: an upper bound on its rebuilds)", fontsize=9
    )
    fig.tight_layout()
    return atomic.write_figure(path, fig)


def run(cfg: InversionConfig, out_dir: str | Path) -> dict[str, Any]:
    """Train the inversion of `cfg.method` on the training identities; writes inversion.pt, report.json and PNGs."""
    method = check(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config.write_resolved(cfg, out)
    start = time.perf_counter()
    arrays = training_arrays(cfg, method, out)
    ridge, chosen = fit_ridge(arrays, cfg)
    unet, history = (None, [])
    if cfg.unet_steps:
        unet, history = train_unet(cross_fitted(arrays, chosen["lambda"]), arrays, cfg, out)
    inversion = LearnedInversion(method.name, cfg.size, ridge, unet)
    report = {
        "method": method.name,
        "size": cfg.size,
        "train_images": int(len(arrays["labels"])),
        "train_identities": int(arrays["labels"].max() + 1),
        "ridge": chosen,
        "unet_steps": cfg.unet_steps,
        "final": history[-1] if history else {},
        "seconds": round(time.perf_counter() - start, 1),
    }
    inversion.save(out / INVERSION_FILE, report)
    atomic.write_json(out / "report.json", {**report, "history": history})
    examples_png(out / "examples.png", LearnedInversion.load(out / INVERSION_FILE, method.name), arrays)
    return report
