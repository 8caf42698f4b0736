"""Stage I: learn the phase optic jointly with the heatmap regressor against an identity adversary.

After `warmup_steps` with the optic frozen (an untrained regressor's gradient would only teach
the optic to blur, which quiets the regressor's noisy output), each step (min-max, alternating):
1. optic + regressor: capture = sensor(PSF * scene); loss = weighted heatmap MSE
   + lambda_priv * identity_information(adversary(capture)) [+ quality_weight * |capture - clean|],
   with the adversary frozen (eval mode, no gradient to its weights);
2. adversary: ArcFace cross-entropy on the same captures (detached), a share shown clean.
So the optic cannot win by fooling one frozen network: the adversary keeps re-learning on it.

Reproducible and resumable: every step re-seeds torch and the sensor noise from (seed, step,
rank) and draws its batch from a per-epoch permutation, so resuming from a checkpoint repeats
the same steps exactly. Launched by torchrun it runs DistributedDataParallel (one process per
device); otherwise single-process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from anonymizer import checkpoint, runs
from anonymizer.nets import heatmaps
from anonymizer.nets.adversary import (
    Adversary,
    arcface_loss,
    identity_information,
    information_bound,
)
from anonymizer.nets.regressor import HeatmapRegressor, count_parameters, init_from, save_regressor
from anonymizer.stage1 import stage1_plots
from anonymizer.stage1.stage1_config import RebuildConfig, Stage1Config, validate
from anonymizer.stage1.stage1_data import FaceCrops, Stage1Data, prepare
from anonymizer.training_runtime import (
    Runtime,
    batches,
    process_runtime,
    refuse_changed_config,
    run_summary,
    step_seed,
    wrap,
)
from obscura import atomic, config
from optics import deconvolution
from optics.camera import Camera
from optics.convolution import convolve, correlate
from optics.optic import Optic
from optics.optic_file import save_optic
from optics.psf_metrics import encircled_energy_radius_px
from optics.psf_plots import save_psf_figure
from optics.sensor import Sensor
from optics.srgb import linear_to_srgb, srgb_to_linear
from optics.srgb_capture import capture_srgb, capture_srgb_with_psf

METRICS = (
    "heatmap_loss",
    "identity_information",
    "information_bound",
    "adversary_loss",
    "adversary_accuracy",
    "nme",
    "quality_l1",
)
REBUILD_METRICS = ("rebuild_identity_information", "rebuild_adversary_accuracy", "rebuild_psnr_db")
PSF_ENERGY = 0.8  # logged: radius of the PSF holding this share of the light (mean over R, G, B)


@dataclass
class Models:
    """The three trained modules, plain (unwrapped)."""

    camera: Camera
    regressor: HeatmapRegressor
    adversary: Adversary


def build_models(cfg: Stage1Config, identities: list[str], device: torch.device) -> Models:
    """Camera (trainable optic, fresh sensor noise), regressor and adversary (fresh or `adversary.init`), seeded by train.seed."""
    torch.manual_seed(cfg.train.seed)
    r, a = cfg.regressor, cfg.adversary
    camera = Camera(Optic(cfg.camera.optic), Sensor(cfg.camera.sensor), noise_seed=None)
    regressor = HeatmapRegressor(r.base_channels, r.depth, r.stride, r.max_channels)
    if r.init:
        init_from(regressor, r.init, cfg.data.image_size, "regressor.init")
    adversary = runs.build_adversary(a, len(identities))
    if a.init:
        runs.load_weights(adversary, Path(a.init), runs.read_recogniser(Path(a.init)), identities)
    return Models(camera.to(device), regressor.to(device), adversary.to(device))


def build_optimizers(models: Models, cfg: Stage1Config) -> dict[str, torch.optim.Optimizer]:
    """Adam for each player."""
    return {
        "optic": torch.optim.Adam(models.camera.parameters(), lr=cfg.train.lr_optic),
        "regressor": torch.optim.Adam(models.regressor.parameters(), lr=cfg.train.lr_regressor),
        "adversary": torch.optim.Adam(models.adversary.parameters(), lr=cfg.adversary.lr),
    }


def rebuild(capture: Tensor, psf: Tensor, cfg: RebuildConfig) -> Tensor:
    """The attacker's least-squares rebuild of sRGB captures through `psf`, differentiable in both (sRGB out)."""
    y = srgb_to_linear(capture)
    scene = deconvolution.tikhonov(y, lambda x: convolve(x, psf), lambda v: correlate(v, psf), cfg.lam, cfg.iterations)
    return linear_to_srgb(scene.clamp(0.0, 1.0))


def psnr_db(a: Tensor, b: Tensor) -> float:
    """Mean PSNR (dB) of two batches in [0, 1], image by image."""
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return float((-10 * torch.log10(mse)).mean())


def train_step(
    models: Models,
    wrapped: dict[str, nn.Module],
    opts: dict[str, torch.optim.Optimizer],
    batch: list[Tensor],
    step: int,
    cfg: Stage1Config,
    rt: Runtime,
) -> dict[str, float]:
    """One alternating update (optic + regressor, then adversary); returns the step's metrics."""
    t, a = cfg.train, cfg.adversary
    seed = step_seed(t.seed, step, rt.rank)
    torch.manual_seed(seed)
    noise = torch.Generator(device=rt.device).manual_seed(seed)
    images, targets, labels, marks = (x.to(rt.device) for x in batch)

    # 1. optic + regressor against the frozen adversary (the optic itself frozen during warm-up)
    models.adversary.eval().requires_grad_(False)
    learn_optic = step >= t.warmup_steps
    inverting = cfg.rebuild.weight > 0
    with torch.set_grad_enabled(learn_optic):  # the plain module while frozen: DDP only syncs a trained optic
        if inverting:
            capture, psf = capture_srgb_with_psf(wrapped["camera"] if learn_optic else models.camera, images, noise)
        else:
            capture = capture_srgb(wrapped["camera"] if learn_optic else models.camera, images, noise)
    pred = wrapped["regressor"](capture)
    heat = heatmaps.heatmap_loss(pred, targets, cfg.regressor.foreground_weight)
    logits, _ = models.adversary(capture)
    info = identity_information(logits)
    quality = (capture - images).abs().mean()
    lam = t.lambda_priv if learn_optic else 0.0
    loss = heat + lam * info + t.quality_weight * quality
    extra: dict[str, float] = {}
    if inverting:
        k = min(cfg.rebuild.images, images.shape[0])
        rebuilt = rebuild(capture[:k], psf, cfg.rebuild)
        rebuilt_logits, _ = models.adversary(rebuilt)
        rebuilt_info = identity_information(rebuilt_logits)
        loss = loss + (cfg.rebuild.weight if learn_optic else 0.0) * rebuilt_info
        with torch.no_grad():
            extra = {
                "rebuild_identity_information": rebuilt_info.item(),
                "rebuild_adversary_accuracy": (rebuilt_logits.argmax(dim=1) == labels[:k]).float().mean().item(),
                "rebuild_psnr_db": psnr_db(rebuilt, images[:k]),
            }
    opts["optic"].zero_grad(set_to_none=True)
    opts["regressor"].zero_grad(set_to_none=True)
    loss.backward()
    if learn_optic:
        opts["optic"].step()
    opts["regressor"].step()

    # 2. the adversary re-learns identities from these captures (a share of clean faces anchors it), and from the
    # attacker's rebuilds of them when the loop inverts its captures
    models.adversary.train().requires_grad_(True)
    n_clean = int(round(a.clean_fraction * images.shape[0]))
    seen = torch.cat([images[:n_clean], capture.detach()[n_clean:]])
    seen_labels = labels
    if inverting:
        seen, seen_labels = torch.cat([seen, rebuilt.detach()]), torch.cat([labels, labels[:k]])
    for _ in range(a.steps_per_step):
        plain, margin = wrapped["adversary"](seen, seen_labels)
        adv_loss, _ = arcface_loss(margin, plain, seen_labels)
        opts["adversary"].zero_grad(set_to_none=True)
        adv_loss.backward()
        opts["adversary"].step()

    with torch.no_grad():
        found = heatmaps.landmarks(pred, cfg.regressor.stride)
        bound = information_bound(logits, labels)
        accuracy = (logits.argmax(dim=1) == labels).float().mean()  # on captures, before this step's update
    return {
        "heatmap_loss": heat.item(),
        "identity_information": info.item(),
        "information_bound": bound.item(),
        "adversary_loss": adv_loss.item(),
        "adversary_accuracy": accuracy.item(),
        "nme": heatmaps.nme(found, marks).mean().item(),
        "quality_l1": quality.item(),
        **extra,
    }


def resume(
    folder: Path, models: Models, opts: dict[str, torch.optim.Optimizer], cfg: Stage1Config, rt: Runtime
) -> tuple[int, list[dict], list[dict], str | None]:
    """Restore the newest readable checkpoint: (start step, history, unlogged metrics, its path or None)."""
    found = checkpoint.latest(folder, map_location=rt.device)
    if found is None:
        return 0, [], [], None
    path, state = found
    refuse_changed_config(path, cfg, state["config"])
    models.camera.load_state_dict(state["camera"])
    models.regressor.load_state_dict(state["regressor"])
    models.adversary.load_state_dict(state["adversary"])
    for name, opt in opts.items():
        opt.load_state_dict(state[f"opt_{name}"])
    return int(state["step"]), list(state["history"]), list(state["pending"]), str(path)


def save_checkpoint(
    folder: Path,
    step: int,
    models: Models,
    opts: dict[str, torch.optim.Optimizer],
    cfg: Stage1Config,
    history: list[dict],
    pending: list[dict],
) -> Path:
    """Write the state after `step` steps (atomic, checksummed) and keep only the last two."""
    state = {
        "step": step,
        "config": config.to_dict(cfg),
        "camera": models.camera.state_dict(),
        "regressor": models.regressor.state_dict(),
        "adversary": models.adversary.state_dict(),
        **{f"opt_{name}": opt.state_dict() for name, opt in opts.items()},
        "history": history,
        "pending": pending,
    }
    return checkpoint.save_step(folder, step, state)


def summarise(pending: list[dict], step: int, camera: Camera) -> dict[str, float]:
    """Mean of each metric over the steps since the last log line, the PSF's 80 % radius, and the step count."""
    with torch.no_grad():
        radius = float(np.mean(encircled_energy_radius_px(camera.psf().detach().cpu().double().numpy(), PSF_ENERGY)))
    keys = [k for k in (*METRICS, *REBUILD_METRICS) if k in pending[0]]
    return {"step": step, **{k: float(np.mean([m[k] for m in pending])) for k in keys}, "psf_r80_px": radius}


@torch.no_grad()
def validate_landmarks(models: Models, val: FaceCrops, cfg: Stage1Config, rt: Runtime) -> dict[str, float]:
    """Regressor NME on captures of held-out identities (seeded sensor noise) against dlib on the clean crops."""
    models.camera.eval()
    models.regressor.eval()
    loader = DataLoader(val, batch_size=cfg.train.batch_size, shuffle=False, num_workers=cfg.train.workers)
    errors = []
    noise = torch.Generator(device=rt.device).manual_seed(cfg.train.seed)
    for images, _, _, marks in loader:
        images = images.to(rt.device)
        capture = capture_srgb(models.camera, images, noise)
        found = heatmaps.landmarks(models.regressor(capture), cfg.regressor.stride)
        errors.append(heatmaps.nme(found, marks.to(rt.device)).cpu())
    models.camera.train()
    models.regressor.train()
    nme = torch.cat(errors).numpy()
    return {"val_nme": float(nme.mean()), "val_nme_median": float(np.median(nme)), "val_images": int(nme.size)}


def write_outputs(
    out: Path, models: Models, cfg: Stage1Config, data: Stage1Data, history: list[dict], extra: dict[str, Any]
) -> dict[str, Any]:
    """optic.npz, regressor.pt, adversary.pt, metrics.json and the PNGs (loss curves, PSF, example captures)."""
    save_optic(out / runs.OPTIC, models.camera)
    arch = {k: getattr(cfg.regressor, k) for k in ("base_channels", "depth", "stride", "max_channels")}
    save_regressor(out / runs.REGRESSOR, models.regressor, arch, cfg.data.image_size)
    runs.save_recogniser(out / runs.ADVERSARY, runs.ADVERSARY_KINDS[0], models.adversary, data.identities)
    metrics = {
        "data": data.summary,
        "parameters": {
            "optic": count_parameters(models.camera),
            "regressor": count_parameters(models.regressor),
            "adversary": count_parameters(models.adversary),
        },
        "final": history[-1] if history else {},
        "history": history,
        **extra,
    }
    atomic.write_json(out / runs.METRICS, metrics)
    stage1_plots.loss_curves(out / "loss_curves.png", history)
    with torch.no_grad():
        psf = models.camera.psf().detach().cpu().double().numpy()
    save_psf_figure(out / "psf.png", psf, cfg.camera.optic.pixel_pitch_m, "stage-I optic")
    stage1_plots.examples(out / "captures.png", models, data.val or data.train, cfg)
    return metrics


def train(cfg: Stage1Config, out_dir: str | Path) -> dict[str, Any]:
    """Run (or resume) stage I into `out_dir`; returns the metrics written to metrics.json."""
    validate(cfg)
    out = Path(out_dir)
    with process_runtime(cfg, out) as rt:
        data = prepare(cfg.data, cfg.regressor, out, progress=cfg.train.progress and rt.rank == 0, write=rt.rank == 0)
        models = build_models(cfg, data.identities, rt.device)
        opts = build_optimizers(models, cfg)
        folder = out / runs.CHECKPOINTS
        start, history, pending, resumed = resume(folder, models, opts, cfg, rt)
        wrapped = {
            "camera": wrap(models.camera, rt),
            "regressor": wrap(models.regressor, rt),
            "adversary": wrap(models.adversary, rt),
        }
        t0 = time.perf_counter()
        bar = tqdm(
            total=cfg.train.steps,
            initial=start,
            desc="stage I",
            unit="step",
            disable=not cfg.train.progress or rt.rank != 0,
        )
        for step, batch in batches(data.train, cfg.train, rt, start):
            pending.append(train_step(models, wrapped, opts, batch, step, cfg, rt))
            done = step + 1
            if done % cfg.train.log_every == 0 or done == cfg.train.steps:
                history.append(summarise(pending, done, models.camera))
                pending = []
                bar.set_postfix(
                    heat=f"{history[-1]['heatmap_loss']:.4f}",
                    info=f"{history[-1]['identity_information']:.3f}",
                    adv=f"{history[-1]['adversary_accuracy']:.2f}",
                    nme=f"{history[-1]['nme']:.3f}",
                    r80=f"{history[-1]['psf_r80_px']:.1f}",
                )
            if rt.rank == 0 and (done % cfg.train.checkpoint_every == 0 or done == cfg.train.steps):
                save_checkpoint(folder, done, models, opts, cfg, history, pending)
            bar.update(1)
        bar.close()
        seconds = time.perf_counter() - t0
        if rt.rank != 0:
            return {}
        extra = run_summary(cfg.train.steps, start, seconds, resumed, rt)
        if data.val is not None and len(data.val):
            extra["validation"] = validate_landmarks(models, data.val, cfg, rt)
        return write_outputs(out, models, cfg, data, history, extra)
