"""The adaptive attacker of a stage-I optic: a recogniser fine-tuned on the optic's own captures.

SFace and dlib are oblivious: they never saw a capture. An attacker who knows the optic can image
faces through it and adapt. Here the stage-I adversary's IResNet (trained on the training
identities, clean and captured) is fine-tuned with ArcFace on captures of the training
identities through the final, frozen optic (fresh sensor noise every batch, random flips), then
judged on identities it never saw (the run's test split, or any face folder): verification AUC,
TAR@FAR and closed-set rank-1 with captures on both sides and with a clean gallery. Its score on
clean faces of the same identities is reported too: an attacker that cannot recognise clean
unseen faces would make the capture figures meaningless. With `method` the same attacker sees an
evaluation baseline (lowres8, defocus, ...) in place of the optic, so baselines and optics can be
compared against one adaptive attacker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from tqdm import tqdm

from anonymizer import checkpoint, runs
from anonymizer.nets.adversary import Adversary, arcface_loss
from anonymizer.stage1.stage1_config import Stage1Config
from anonymizer.stage1.stage1_data import prepare
from evaluation import methods, metrics
from faces.alignment import centre_crop
from faces.face_sets import (
    list_images,
    load_face_set,
    read_rgb,
    resolve_root,
    split_identities,
)
from obscura import atomic, config
from obscura.config import bounded
from obscura.errors import ObscuraError
from optics.image_io import from_uint8
from optics.srgb_capture import SrgbImaging, frozen_camera_imaging

PROTOCOLS = ("captured_gallery", "clean_gallery", "clean_only")


@dataclass
class AttackConfig:
    """Everything that decides an adaptive-attacker run; written resolved next to its report."""

    run: str = ""  # a stage-I output folder (config.yaml, optic.npz, adversary.pt), or "weights": the committed one
    # "": image faces through the run's optic; else an evaluation method (lowres8, defocus, ...) in its
    # place, applied to the same crops: the same attacker measured on a baseline
    method: str = ""
    out: str = ""
    # adversary: fine-tune the run's adversary; scratch: a fresh one of the same shape; or the
    # attacker.pt of an earlier run on the same identities (e.g. a clean-face recogniser, clean_fraction 1)
    init: str = "adversary"
    steps: int = bounded(1000, ge=1)
    batch_size: int = bounded(32, ge=1)
    lr: float = bounded(3e-4, ge=0)  # 0: the starting network, unchanged
    # the run's adversary margin; a smaller one (even 0: plain softmax) learns more easily
    arcface_margin: float = bounded(-1.0, ge=0, lt=1.5, also=(-1.0,))
    # the size the recogniser resizes every face to first (64: about 4x cheaper than 128; 0: none);
    # -1: the starting network's (the file's, or stage I's adversary.input_px from scratch)
    input_px: int = bounded(-1, ge=16, also=(-1, 0))
    # share of each batch shown clean, so clean galleries stay usable (1: a clean-face recogniser)
    clean_fraction: float = bounded(0.25, ge=0, le=1)
    test_data: str = ""  # "": the run's face set, restricted to its test split; else a folder (all identities unseen)
    test_split: str = "test"
    test_min_images: int = bounded(2, ge=2)
    checkpoint_every: int = bounded(200, ge=1)
    seed: int = 0
    threads: int = bounded(0, ge=0)
    bootstrap: int = bounded(1000, ge=1)
    far: float = bounded(1e-3, gt=0, lt=1)
    progress: bool = True


def check(cfg: AttackConfig) -> Stage1Config:
    """Refuse a bad configuration before any work; returns the stage-I run's configuration."""
    config.check(cfg)
    if not cfg.run:
        raise ObscuraError("--run is required ('weights' or a stage-I output folder)")
    folder = runs.require_stage1(cfg.run, (runs.CONFIG, runs.OPTIC, runs.ADVERSARY), f"--run {cfg.run}")
    if not cfg.out:
        raise ObscuraError("--out is required (the folder for report.json and the attacker's checkpoints)")
    if cfg.init not in ("adversary", "scratch") and not Path(cfg.init).is_file():
        raise ObscuraError(f"config key 'init' is {cfg.init!r}; expected 'adversary', 'scratch' or an attacker.pt file")
    if cfg.method:
        try:
            methods.get(cfg.method)
        except ObscuraError as err:
            raise ObscuraError(f"config key 'method': {err}") from None
    return runs.load_stage1_config(folder)


def build(stage: Stage1Config, cfg: AttackConfig, identities: list[str]) -> tuple[SrgbImaging, Adversary]:
    """What the attacker sees (the run's frozen optic, or `method`) and the attacker network
    (the run's adversary, a fresh one, or an earlier attacker)."""
    folder = runs.stage1_folder(cfg.run)
    imaging = methods.method_imaging(cfg.method) if cfg.method else frozen_camera_imaging(str(folder / runs.OPTIC))
    torch.manual_seed(cfg.seed)
    margin = None if cfg.arcface_margin < 0 else cfg.arcface_margin
    if cfg.init == "scratch":
        return imaging, runs.build_adversary(
            stage.adversary, len(identities), margin, None if cfg.input_px < 0 else cfg.input_px
        )
    start = folder / runs.ADVERSARY if cfg.init == "adversary" else Path(cfg.init)
    saved = runs.read_recogniser(start)
    attacker = runs.build_adversary(
        stage.adversary, len(identities), margin, saved["input_px"] if cfg.input_px < 0 else cfg.input_px
    )
    runs.load_weights(attacker, start, saved, identities)
    return imaging, attacker


def attacker_batch(imaging: SrgbImaging, images: Tensor, step: int, cfg: AttackConfig) -> Tensor:
    """What the attacker trains on: captures (a clean share first), randomly mirrored."""
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    n_clean = int(round(cfg.clean_fraction * images.shape[0]))
    seen = images
    if n_clean < images.shape[0]:
        with torch.no_grad():
            seen = torch.cat([images[:n_clean], imaging(images, g)[n_clean:]])
    flip = torch.rand(seen.shape[0], generator=g) < 0.5
    return torch.where(flip[:, None, None, None], seen.flip(-1), seen)


def fine_tune(
    imaging: SrgbImaging, attacker: Adversary, train_set, cfg: AttackConfig, out: Path
) -> list[dict[str, float]]:
    """ArcFace fine-tuning on captures of the training identities; resumes from out/checkpoints."""
    opt = torch.optim.Adam(attacker.parameters(), lr=cfg.lr)
    folder = out / runs.CHECKPOINTS
    found = checkpoint.latest(folder)
    start, history = 0, []
    if found is not None:
        _, state = found
        attacker.load_state_dict(state["attacker"])
        opt.load_state_dict(state["opt"])
        start, history = int(state["step"]), list(state["history"])
    attacker.train()
    n = len(train_set)
    rng = np.random.default_rng(cfg.seed)
    orders = [rng.permutation(n) for _ in range(cfg.steps * cfg.batch_size // n + 1)]
    order = np.concatenate(orders)
    bar = tqdm(total=cfg.steps, initial=start, desc="adaptive attacker", unit="step", disable=not cfg.progress)
    for step in range(start, cfg.steps):
        torch.manual_seed(cfg.seed * 7919 + step)
        idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        items = [train_set[int(i)] for i in idx]
        images = torch.stack([it[0] for it in items])
        labels = torch.tensor([it[2] for it in items])
        logits, margin = attacker(attacker_batch(imaging, images, step, cfg), labels)
        loss, accuracy = arcface_loss(margin, logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append({"step": step + 1, "loss": loss.item(), "accuracy": accuracy.item()})
        bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{accuracy.item():.2f}")
        bar.update(1)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            checkpoint.save_step(
                folder,
                step + 1,
                {"step": step + 1, "attacker": attacker.state_dict(), "opt": opt.state_dict(), "history": history},
            )
    bar.close()
    return history


def test_images(stage: Stage1Config, cfg: AttackConfig) -> tuple[list[list[Path]], str]:
    """Images of the unseen identities, grouped per identity (sorted), and a description of where from."""
    if cfg.test_data:
        face_set = load_face_set(cfg.test_data, cfg.test_min_images, progress=cfg.progress)
        where = f"{cfg.test_data} (identities with >= {cfg.test_min_images} images; none seen in training)"
    else:
        root = resolve_root(stage.data.root)
        parts = split_identities(sorted(list_images(root)), stage.data.split_fractions, stage.data.split_seed)
        if cfg.test_split not in parts:
            raise ObscuraError(f"config key 'test_split' is {cfg.test_split!r}; the run's splits are {sorted(parts)}")
        face_set = load_face_set(root, cfg.test_min_images, identities=parts[cfg.test_split], progress=cfg.progress)
        where = f"{root}, split '{cfg.test_split}' of the stage-I run (identities with >= {cfg.test_min_images} images)"
    return [[img.path for img in face_set.images[name]] for name in face_set.identities], where


@torch.no_grad()
def embed_test(
    imaging: SrgbImaging, attacker: Adversary, groups: list[list[Path]], size: int, cfg: AttackConfig
) -> dict[str, Tensor]:
    """Unit embeddings of every test image, clean and captured (per-image seeded noise)."""
    attacker.eval()
    clean, captured = [], []
    paths = [p for group in groups for p in group]
    for i in tqdm(range(0, len(paths), cfg.batch_size), desc="attacker embeddings", disable=not cfg.progress):
        crops = [centre_crop(read_rgb(p)[0], size, str(p))[0] for p in paths[i : i + cfg.batch_size]]
        images = from_uint8(np.stack(crops))
        g = torch.Generator().manual_seed(cfg.seed + i)
        clean.append(F.normalize(attacker.embedder(images)))
        captured.append(F.normalize(attacker.embedder(imaging(images, g))))
    return {"clean": torch.cat(clean), "captured": torch.cat(captured)}


def judge(emb: dict[str, Tensor], groups: list[list[Path]], cfg: AttackConfig) -> dict[str, Any]:
    """Rank-1 and verification of probes (all but each identity's first image) against a one-image gallery."""
    sizes = [len(g) for g in groups]
    first = np.cumsum([0] + sizes[:-1])
    is_gallery = np.zeros(sum(sizes), dtype=bool)
    is_gallery[first] = True
    labels = np.repeat(np.arange(len(groups)), sizes)[~is_gallery]
    pairs = {
        "captured_gallery": ("captured", "captured"),
        "clean_gallery": ("captured", "clean"),
        "clean_only": ("clean", "clean"),
    }
    result: dict[str, Any] = {
        "n_identities": len(groups),
        "n_probes": int((~is_gallery).sum()),
        "chance": 1.0 / len(groups),
    }
    for name, (probe_kind, gallery_kind) in pairs.items():
        scores = (
            (emb[probe_kind][torch.from_numpy(~is_gallery)] @ emb[gallery_kind][torch.from_numpy(is_gallery)].T)
            .double()
            .numpy()
        )
        result[name] = metrics.privacy_metrics(scores, labels, cfg.far, cfg.bootstrap, cfg.seed)
    return result


def curve_png(path: Path, history: list[dict[str, float]]) -> Path:
    """Fine-tuning loss and top-1 accuracy on the training identities' captures."""
    matplotlib.use("Agg")
    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, key in zip(axes, ("loss", "accuracy")):
        values = (
            np.convolve([h[key] for h in history], np.ones(20) / 20, mode="valid")
            if len(history) >= 20
            else [h[key] for h in history]
        )
        ax.plot(steps[len(steps) - len(values) :], values, lw=1.2)
        ax.set_title(f"adaptive attacker: ArcFace {key} (20-step mean)", fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return atomic.write_figure(path, fig)


def run(cfg: AttackConfig) -> dict[str, Any]:
    """Fine-tune the attacker on the run's training identities, then judge it on unseen ones; writes report.json."""
    stage = check(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    config.write_resolved(cfg, out)
    start = time.time()
    data = prepare(stage.data, stage.regressor, out, progress=cfg.progress, write=False)
    imaging, attacker = build(stage, cfg, data.identities)
    history = fine_tune(imaging, attacker, data.train.without_targets("none"), cfg, out)
    groups, where = test_images(stage, cfg)
    result = {
        "run": str(runs.stage1_folder(cfg.run).resolve()),
        "init": cfg.init,
        "imaging": f"method {cfg.method}" if cfg.method else "the run's optic.npz",
        "train_identities": len(data.identities),
        "train_images": len(data.train),
        "final_train_accuracy": float(np.mean([h["accuracy"] for h in history[-50:]])),
        "test": where,
        **judge(embed_test(imaging, attacker, groups, stage.data.image_size, cfg), groups, cfg),
        "seconds": round(time.time() - start, 1),
    }
    runs.save_recogniser(out / runs.ATTACKER, runs.ADVERSARY_KINDS[1], attacker, data.identities)
    atomic.write_json(out / "report.json", result)
    curve_png(out / "attacker_training.png", history)
    return result
