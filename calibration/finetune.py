"""Sim-to-real: fine-tune the stage-I heatmap regressor on captures simulated with a measured PSF.

A fabricated optic never images exactly like its design. With the PSF measured from the
prototype (`python -m calibration measure`), training faces are re-imaged through that PSF and
the run's sensor model, and the regressor is fine-tuned on them. The landmark NME on held-out
identities is reported for the design regressor on design captures (what simulation promised),
on measured-PSF captures before fine-tuning (what the prototype delivers) and after.
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
from torch.utils.data import DataLoader
from tqdm import tqdm

from anonymizer import checkpoint, runs
from anonymizer.nets import heatmaps
from anonymizer.nets.regressor import HeatmapRegressor, load_regressor, save_regressor
from anonymizer.stage1.stage1_config import Stage1Config
from anonymizer.stage1.stage1_data import prepare
from obscura import atomic, config
from obscura.config import bounded
from obscura.errors import ObscuraError
from optics.sensor import Sensor
from optics.srgb_capture import (
    SrgbImaging,
    capture_srgb,
    frozen_camera_imaging,
    psf_imaging,
)


@dataclass
class FinetuneConfig:
    """Everything that decides a fine-tuning run; written resolved next to its outputs."""

    run: str = "weights"  # a stage-I output folder, or "weights" for the committed optic and regressor
    measured: str = ""  # folder written by `python -m calibration measure` (psf.npy)
    steps: int = bounded(300, ge=1)
    batch_size: int = bounded(16, ge=1)
    lr: float = bounded(3e-4, gt=0)
    val_images: int = bounded(256, ge=1)  # held-out identities' images for the NME (round-robin over identities)
    checkpoint_every: int = bounded(100, ge=1)
    seed: int = 0
    threads: int = bounded(0, ge=0)
    progress: bool = True


def stage1_files(run: str) -> tuple[Stage1Config, Path, Path]:
    """(stage-I configuration, optic file, regressor file) of a run folder or of the committed weights."""
    folder = runs.require_stage1(run, (runs.CONFIG, runs.OPTIC, runs.REGRESSOR), f"config key 'run' is {run!r}")
    return runs.load_stage1_config(folder), folder / runs.OPTIC, folder / runs.REGRESSOR


def read_measured_psf(folder: str | Path, channels: int) -> Tensor:
    """The measured PSF (C x h x w, each channel summing to 1); a mono PSF serves every colour channel."""
    path = Path(folder) / "psf.npy"
    try:
        psf = np.load(path)
    except (OSError, ValueError) as err:
        raise ObscuraError(
            f"measured PSF {path} cannot be read ({err}); expected the folder written by `calibration measure`"
        ) from None
    psf = psf[None] if psf.ndim == 2 else psf
    if psf.ndim != 3 or psf.shape[0] not in (1, channels) or not np.all(np.isfinite(psf)):
        raise ObscuraError(
            f"measured PSF {path} has shape {psf.shape}; expected finite h x w, 1 x h x w or {channels} x h x w"
        )
    psf = np.clip(psf, 0.0, None)
    sums = psf.sum(axis=(1, 2), keepdims=True)
    if np.any(sums <= 0):
        raise ObscuraError(f"measured PSF {path} holds no light in some channel")
    return torch.from_numpy(np.broadcast_to(psf / sums, (channels, *psf.shape[1:])).copy()).float()


def measured_imaging(psf: Tensor, stage: Stage1Config) -> SrgbImaging:
    """sRGB faces -> captures through the measured PSF and the run's sensor model."""
    imaging = psf_imaging(psf, Sensor(stage.camera.sensor))
    return lambda images, g: capture_srgb(imaging, images, g)


@torch.no_grad()
def landmark_nme(regressor: HeatmapRegressor, imaging: SrgbImaging, val, batch_size: int, seed: int) -> float:
    """Mean NME of the regressor on captures of the held-out faces (seeded noise)."""
    was_training = regressor.training
    regressor.eval()
    errors = []
    g = torch.Generator().manual_seed(seed)
    for images, _, _, marks in DataLoader(val, batch_size=batch_size, shuffle=False):
        found = heatmaps.landmarks(regressor(imaging(images, g)), regressor.stride)
        errors.append(heatmaps.nme(found, marks))
    regressor.train(was_training)
    return float(torch.cat(errors).mean())


def fine_tune(
    regressor: HeatmapRegressor, imaging: SrgbImaging, train_set, stage: Stage1Config, cfg: FinetuneConfig, out: Path
) -> list[dict[str, float]]:
    """Heatmap-loss fine-tuning on measured-PSF captures; resumes from out/checkpoints."""
    opt = torch.optim.Adam(regressor.parameters(), lr=cfg.lr)
    folder = out / runs.CHECKPOINTS
    start, history = 0, []
    found = checkpoint.latest(folder)
    if found is not None:
        state = found[1]
        regressor.load_state_dict(state["regressor"])
        opt.load_state_dict(state["opt"])
        start, history = int(state["step"]), list(state["history"])
    regressor.train()
    order = np.concatenate(
        [
            np.random.default_rng(cfg.seed + e).permutation(len(train_set))
            for e in range(cfg.steps * cfg.batch_size // len(train_set) + 1)
        ]
    )
    bar = tqdm(total=cfg.steps, initial=start, desc="sim-to-real fine-tuning", unit="step", disable=not cfg.progress)
    for step in range(start, cfg.steps):
        train_set.set_epoch(step * cfg.batch_size // len(train_set))  # moved faces: new motions every epoch
        items = [train_set[int(i)] for i in order[step * cfg.batch_size : (step + 1) * cfg.batch_size]]
        images, targets = torch.stack([it[0] for it in items]), torch.stack([it[1] for it in items])
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        loss = heatmaps.heatmap_loss(regressor(imaging(images, g)), targets, stage.regressor.foreground_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append({"step": step + 1, "heatmap_loss": loss.item()})
        bar.set_postfix(loss=f"{loss.item():.4f}")
        bar.update(1)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            checkpoint.save_step(
                folder,
                step + 1,
                {"step": step + 1, "regressor": regressor.state_dict(), "opt": opt.state_dict(), "history": history},
            )
    bar.close()
    return history


def loss_png(path: Path, history: list[dict[str, float]], nme: dict[str, float]) -> Path:
    """The fine-tuning loss curve, with the three NMEs in the title."""
    matplotlib.use("Agg")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([h["step"] for h in history], [h["heatmap_loss"] for h in history], lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("heatmap loss")
    ax.set_title(
        f"NME design {nme['design_psf']:.3f} | measured PSF before {nme['measured_psf_before']:.3f}, "
        f"after {nme['measured_psf_after']:.3f}",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    return atomic.write_figure(path, fig)


def run(cfg: FinetuneConfig, out_dir: str | Path) -> dict[str, Any]:
    """Fine-tune the regressor of `cfg.run` on measured-PSF captures; writes regressor.pt, finetune.json, PNG."""
    config.check(cfg)
    if not cfg.measured:
        raise ObscuraError("--measured is required (the folder written by `python -m calibration measure`)")
    stage, optic_file, regressor_file = stage1_files(cfg.run)
    psf = read_measured_psf(cfg.measured, 3)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(out_dir)
    config.write_resolved(cfg, out)
    start = time.time()
    stage.data.val_images = cfg.val_images
    data = prepare(stage.data, stage.regressor, out, progress=cfg.progress, write=False)
    if data.val is None or not len(data.val):
        raise ObscuraError(f"stage-I configuration of {cfg.run} has no held-out (val) identities to measure the NME on")
    regressor, _ = load_regressor(regressor_file)
    measured, design = measured_imaging(psf, stage), frozen_camera_imaging(str(optic_file))
    nme = {
        "design_psf": landmark_nme(regressor, design, data.val, cfg.batch_size, cfg.seed),
        "measured_psf_before": landmark_nme(regressor, measured, data.val, cfg.batch_size, cfg.seed),
    }
    history = fine_tune(regressor, measured, data.train, stage, cfg, out)
    nme["measured_psf_after"] = landmark_nme(regressor, measured, data.val, cfg.batch_size, cfg.seed)
    arch = {k: getattr(stage.regressor, k) for k in ("base_channels", "depth", "stride", "max_channels")}
    save_regressor(out / runs.REGRESSOR, regressor, arch, stage.data.image_size)
    result = {
        "run": cfg.run,
        "measured": str(Path(cfg.measured).resolve()),
        "landmark_nme": nme,
        "val_images": len(data.val),
        "train_images": len(data.train),
        "steps": cfg.steps,
        "seconds": round(time.time() - start, 1),
    }
    atomic.write_json(out / "finetune.json", result)
    loss_png(out / "finetune.png", history, nme)
    return result
