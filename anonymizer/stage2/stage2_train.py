"""Stage II: train the StarGAN-v2 anonymizer on the frozen stage-I camera's captures.

Each step, as StarGAN-v2's solver (the reference Face-DeId keeps the same loop):
1. discriminator, latent-guided: real = clean reference faces of the target domain, fake =
   G(capture, heatmaps, F(z)); non-saturating loss + R1 on the real faces;
2. discriminator, reference-guided: the same with the style E(reference face);
3. generator + mapping network + style encoder, latent-guided: adversarial + style
   reconstruction - diversity + cycle + heatmap consistency + identity dissimilarity;
4. generator alone, reference-guided: the same losses with styles of two reference faces;
then the EMA copies of G, F and E move towards the trained ones.
The capture and its heatmaps come from the frozen stage-I camera and regressor (fresh seeded
sensor noise); the identity term uses the frozen stage-I adversary's embedder, or a clean-face
recogniser trained on the same identities (`loss.identity_embedder`).

Reproducible and resumable like stage I: every step re-seeds from (seed, step, rank) and draws
its batch from a per-epoch permutation, so resuming repeats the same steps exactly. Launched by
torchrun it runs DistributedDataParallel (stage I's runtime); otherwise single-process.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from anonymizer import checkpoint, runs
from anonymizer.nets.stargan import ARCH_KEYS, Networks, build_networks, save_anonymizer
from anonymizer.runs import Stage1Parts, load_stage1
from anonymizer.stage2 import stage2_losses as losses
from anonymizer.stage2.stage2_config import Stage2Config, validate
from anonymizer.stage2.stage2_data import Stage2Data, prepare, references, resize
from anonymizer.stage2.stage2_plots import loss_curves, sample_grid
from anonymizer.training_runtime import RESUMABLE_KEYS as LOOP_RESUMABLE_KEYS
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
from obscura.digest import file_sha256
from obscura.errors import ObscuraError

# Settings that may change between a run and its resumption (they do not change what is learned).
# The EMA settings only shape the averaged copy, never the trained networks, so they may change too.
# The identity term may change on resume: a trained run can be continued against a better recogniser.
RESUMABLE_KEYS = (
    *LOOP_RESUMABLE_KEYS,
    "train.sample_every",
    "train.ema_warmup",
    "loss.identity",
    "loss.identity_margin",
    "loss.identity_embedder",
)
METRICS = (
    "d_real",
    "d_fake",
    "d_r1",
    "g_adv",
    "g_style",
    "g_diversity",
    "g_cycle",
    "g_heatmap",
    "g_identity",
    "identity_cosine",
    "ds_weight",
)
SAMPLE_SEED = 12345  # fixed faces, references, latents and noise of the sample grids


@dataclass
class Batch:
    """One step's tensors on the device: crops at the stage-I size, model inputs at the generator's size."""

    clean: Tensor  # clean sources, crop size
    heatmaps: Tensor  # the regressor's heatmaps of their captures
    source: Tensor  # clean sources, generator size
    capture: Tensor  # captures, generator size
    y_org: Tensor
    reference: Tensor  # clean reference faces (other identities) of domain y_trg, generator size
    reference2: Tensor
    y_trg: Tensor
    z: Tensor
    z2: Tensor


def arch(cfg: Stage2Config) -> dict[str, Any]:
    """The networks' architecture from the model section."""
    return {k: getattr(cfg.model, k) for k in ARCH_KEYS}


def build(cfg: Stage2Config, device: torch.device) -> tuple[Networks, Networks]:
    """Trained networks (seeded by train.seed) and their EMA copies (no discriminator)."""
    torch.manual_seed(cfg.train.seed)
    nets = build_networks(arch(cfg))
    ema = Networks(
        copy.deepcopy(nets.generator), copy.deepcopy(nets.mapping_network), copy.deepcopy(nets.style_encoder)
    )
    for net in (*nets.named().values(), *ema.named().values()):
        net.to(device)
    for net in ema.named().values():
        net.eval().requires_grad_(False)
    return nets, ema


def build_optimizers(nets: Networks, cfg: Stage2Config) -> dict[str, torch.optim.Optimizer]:
    """Adam per network (the reference's betas and weight decay; the mapping network at its own, lower rate)."""
    t = cfg.train
    return {
        name: torch.optim.Adam(
            net.parameters(),
            lr=t.lr_mapping if name == "mapping_network" else t.lr,
            betas=(t.beta1, t.beta2),
            weight_decay=t.weight_decay,
        )
        for name, net in nets.named().items()
    }


def ema_beta_at(step: int, beta: float, warmup: float) -> float:
    """The EMA's beta at a step: `beta`, or with a warm-up min(beta, (1 + step) / (warmup + step)) (StyleGAN's ramp)."""
    return min(beta, (1.0 + step) / (warmup + step)) if warmup > 0 else beta


@torch.no_grad()
def moving_average(net: nn.Module, ema: nn.Module, beta: float) -> None:
    """ema <- beta * ema + (1 - beta) * net, parameter by parameter."""
    for p, q in zip(net.parameters(), ema.parameters()):
        q.lerp_(p, 1.0 - beta)


def make_batch(
    parts: Stage1Parts,
    data: Stage2Data,
    raw: list[Tensor],
    seed: int,
    cfg: Stage2Config,
    device: torch.device,
    noise: torch.Generator,
) -> Batch:
    """Captures and heatmaps of the sources, reference faces and latents, all drawn from `seed` / `noise`."""
    images, domains, identities, _ = raw
    size = cfg.model.img_size
    draw = torch.Generator().manual_seed(seed)
    refs, refs2, y_trg = references(data, identities, draw)
    clean = images.to(device)
    with torch.no_grad():
        shot = parts.capture(clean, noise)
        heat = parts.regressor(shot)
    latent = (clean.shape[0], cfg.model.latent_dim)
    return Batch(
        clean,
        heat,
        resize(clean, size),
        resize(shot, size),
        domains.to(device),
        _faces(data, refs, size, device),
        _faces(data, refs2, size, device),
        torch.tensor(y_trg, device=device),
        torch.randn(latent, generator=draw).to(device),
        torch.randn(latent, generator=draw).to(device),
    )


def _faces(data: Stage2Data, indices: list[int], size: int, device: torch.device) -> Tensor:
    """Clean training faces by dataset index, at the generator's size."""
    return resize(torch.stack([data.train[k][0] for k in indices]).to(device), size)


def d_step(
    nets: Networks, wrapped: dict[str, nn.Module], opt: torch.optim.Optimizer, b: Batch, latent: bool, cfg: Stage2Config
) -> dict[str, float]:
    """One discriminator update on clean references (real) against G's outputs (fake), with R1 on the reals."""
    with torch.no_grad():
        style = nets.mapping_network(b.z, b.y_trg) if latent else nets.style_encoder(b.reference, b.y_trg)
        fake = nets.generator(b.capture, style, b.heatmaps)
    real = b.reference.detach().clone().requires_grad_(True)
    logits = wrapped["discriminator"](torch.cat([real, fake]), torch.cat([b.y_trg, b.y_trg]))  # one forward: DDP-safe
    real_logits, fake_logits = logits.split(real.shape[0])
    loss_real, loss_fake = losses.adversarial_d(real_logits, fake_logits)
    r1 = losses.r1_penalty(real_logits, real, cfg.train.r1_gamma)
    opt.zero_grad(set_to_none=True)
    (loss_real + loss_fake + r1).backward()
    opt.step()
    return {"d_real": loss_real.item(), "d_fake": loss_fake.item(), "d_r1": r1.item()}


def g_step(
    nets: Networks,
    wrapped: dict[str, nn.Module],
    opts: dict[str, torch.optim.Optimizer],
    b: Batch,
    latent: bool,
    parts: Stage1Parts,
    step: int,
    cfg: Stage2Config,
    noise: torch.Generator,
) -> dict[str, float]:
    """One generator update (with the mapping network and style encoder when latent-guided); returns its losses."""
    w = cfg.loss
    trained = ("generator", "mapping_network", "style_encoder") if latent else ("generator",)
    nets.style_encoder.requires_grad_(latent)
    encoder = wrapped["style_encoder"] if latent else nets.style_encoder
    if latent:
        style = wrapped["mapping_network"](b.z, b.y_trg)
        with torch.no_grad():
            style2 = nets.mapping_network(b.z2, b.y_trg)
    else:
        style = nets.style_encoder(b.reference, b.y_trg)
        with torch.no_grad():
            style2 = nets.style_encoder(b.reference2, b.y_trg)
    fake = wrapped["generator"](b.capture, style, b.heatmaps)
    with torch.no_grad():  # the reference detaches the second output: it is only a target for the diversity term
        fake2 = nets.generator(b.capture, style2, b.heatmaps)
    adv = losses.adversarial_g(nets.discriminator(fake, b.y_trg))
    sty = losses.style_reconstruction(encoder(fake, b.y_trg), style)
    ds = losses.diversity(fake, fake2)
    source = b.capture if w.cycle_target == "capture" else b.source
    rec = wrapped["generator"](
        fake, encoder(source, b.y_org), None
    )  # no heatmap skips on the way back, as the reference
    cyc = losses.cycle(rec, source)
    fake_crop = resize(fake, b.clean.shape[-1])  # the stage-I networks judge at the scale they were trained at
    reimage = (lambda x: parts.capture(x, noise)) if w.heatmap_through_camera else None
    heat = losses.heatmap_consistency(parts.regressor, fake_crop, b.heatmaps, reimage)
    cosine = losses.identity_similarity(parts.embedder, fake_crop, b.clean)
    ident = losses.identity_dissimilarity(cosine, w.identity_margin)
    ds_weight = losses.diversity_weight(step, w.diversity, cfg.train.ds_decay_steps)
    loss = adv + w.style * sty - ds_weight * ds + w.cycle * cyc + w.heatmap * heat + w.identity * ident
    for name in opts:
        if name != "discriminator":
            opts[name].zero_grad(set_to_none=True)
    loss.backward()
    for name in trained:
        opts[name].step()
    nets.style_encoder.requires_grad_(True)
    return {
        "g_adv": adv.item(),
        "g_style": sty.item(),
        "g_diversity": ds.item(),
        "g_cycle": cyc.item(),
        "g_heatmap": heat.item(),
        "g_identity": ident.item(),
        "identity_cosine": cosine.mean().item(),
        "ds_weight": ds_weight,
    }


def train_step(
    nets: Networks,
    ema: Networks,
    wrapped: dict[str, nn.Module],
    opts: dict[str, torch.optim.Optimizer],
    parts: Stage1Parts,
    data: Stage2Data,
    raw: list[Tensor],
    step: int,
    cfg: Stage2Config,
    rt: Runtime,
) -> dict[str, float]:
    """Two discriminator and two generator updates, then the EMA; returns the step's metrics (means over each pair)."""
    seed = step_seed(cfg.train.seed, step, rt.rank)
    torch.manual_seed(seed)
    noise = torch.Generator(device=rt.device).manual_seed(seed)
    b = make_batch(parts, data, raw, seed, cfg, rt.device, noise)
    nets.discriminator.requires_grad_(True)
    d = [d_step(nets, wrapped, opts["discriminator"], b, latent, cfg) for latent in (True, False)]
    nets.discriminator.requires_grad_(False)  # the generator steps use the plain discriminator, frozen
    g = [g_step(nets, wrapped, opts, b, latent, parts, step, cfg, noise) for latent in (True, False)]
    beta = ema_beta_at(step, cfg.train.ema_beta, cfg.train.ema_warmup)
    for name, net in ema.named().items():
        moving_average(getattr(nets, name), net, beta)
    return {k: float(np.mean([m[k] for m in (*d, *g) if k in m])) for k in METRICS}


def resume(
    folder: Path,
    nets: Networks,
    ema: Networks,
    opts: dict[str, torch.optim.Optimizer],
    cfg: Stage2Config,
    parts: Stage1Parts,
    rt: Runtime,
) -> tuple[int, list[dict], list[dict], str | None]:
    """Restore the newest readable checkpoint: (start step, history, unlogged metrics, its path or None)."""
    found = checkpoint.latest(folder, map_location=rt.device)
    if found is None:
        return 0, [], [], None
    path, state = found
    refuse_changed_config(path, cfg, state["config"], RESUMABLE_KEYS)
    for name, digest in state["stage1_digest"].items():
        if parts.digest.get(name) != digest:
            raise ObscuraError(
                f"{path} was trained on another stage-I result: {name} in {cfg.stage1!r} has changed since; "
                "use a new --out folder or the same stage-I files"
            )
    load_networks(state, nets, ema)
    for name, opt in opts.items():
        opt.load_state_dict(state[f"opt_{name}"])
    return int(state["step"]), list(state["history"]), list(state["pending"]), str(path)


def start_from(path: Path, nets: Networks, ema: Networks, cfg: Stage2Config) -> None:
    """Load the networks and EMA of another run's checkpoint (same model section) as this run's starting point."""
    state = checkpoint.load(path)
    theirs = state.get("config", {}).get("model", {})
    for key, value in config.to_dict(cfg.model).items():
        if theirs.get(key) != value:
            raise ObscuraError(
                f"config key 'train.init': {path} has model.{key} = {theirs.get(key)!r}, this config {value!r}; "
                "expected the same model section"
            )
    load_networks(state, nets, ema)


def load_networks(state: dict[str, Any], nets: Networks, ema: Networks) -> None:
    """The trained networks and their EMA copies of a checkpoint, loaded into `nets` and `ema`."""
    for name, net in nets.named().items():
        net.load_state_dict(state["nets"][name])
    for name, net in ema.named().items():
        net.load_state_dict(state["ema"][name])


def save_checkpoint(
    folder: Path,
    step: int,
    nets: Networks,
    ema: Networks,
    opts: dict[str, torch.optim.Optimizer],
    cfg: Stage2Config,
    parts: Stage1Parts,
    history: list[dict],
    pending: list[dict],
) -> Path:
    """Write the state after `step` steps (atomic, checksummed) and keep only the last two."""
    state = {
        "step": step,
        "config": config.to_dict(cfg),
        "stage1_digest": parts.digest,
        "nets": {name: net.state_dict() for name, net in nets.named().items()},
        "ema": {name: net.state_dict() for name, net in ema.named().items()},
        **{f"opt_{name}": opt.state_dict() for name, opt in opts.items()},
        "history": history,
        "pending": pending,
    }
    return checkpoint.save_step(folder, step, state)


def sample_batch(parts: Stage1Parts, data: Stage2Data, cfg: Stage2Config, device: torch.device) -> Batch:
    """The fixed faces of every sample grid: spread over the training set, with fixed references, latents and noise."""
    count = min(cfg.train.samples, len(data.train))
    picks = np.linspace(0, len(data.train) - 1, count).round().astype(int).tolist()
    items = [data.train[k] for k in picks]
    raw = [torch.stack([it[0] for it in items]), *(torch.tensor([it[j] for it in items]) for j in (1, 2, 3))]
    return make_batch(
        parts, data, raw, SAMPLE_SEED, cfg, device, torch.Generator(device=device).manual_seed(SAMPLE_SEED)
    )


@torch.no_grad()
def write_samples(path: Path, ema: Networks, b: Batch, step: int) -> Path:
    """Source, capture, two latent-guided outputs, a reference face and the output in its style (EMA networks)."""
    g, f, e = ema.generator, ema.mapping_network, ema.style_encoder
    rows = {
        "clean source": b.source,
        "capture": b.capture,
        "latent z1": g(b.capture, f(b.z, b.y_trg), b.heatmaps),
        "latent z2": g(b.capture, f(b.z2, b.y_trg), b.heatmaps),
        "reference": b.reference,
        "in its style": g(b.capture, e(b.reference, b.y_trg), b.heatmaps),
    }
    return sample_grid(path, rows, f"stage II after {step} steps (EMA generator)")


def summarise(pending: list[dict], step: int) -> dict[str, float]:
    """Mean of each metric over the steps since the last log line, and the step count."""
    return {"step": step, **{k: float(np.mean([m[k] for m in pending])) for k in METRICS}}


def write_outputs(
    out: Path,
    nets: Networks,
    ema: Networks,
    cfg: Stage2Config,
    parts: Stage1Parts,
    data: Stage2Data,
    history: list[dict],
    samples: Batch,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """generator_ema.pt (with the mapping network and style encoder), metrics.json, loss_curves.png, samples.png."""
    info = {
        "stage1": cfg.stage1,
        "stage1_digest": parts.digest,
        "crop_size": parts.crop_size,
        "steps": cfg.train.steps,
        "train_identities": data.identities,
    }
    save_anonymizer(out / runs.GENERATOR_EMA, ema, arch(cfg), info)
    metrics = {
        "data": data.summary,
        # every weight: the discriminator is left frozen (requires_grad False) after each step's generator updates
        "parameters": {name: sum(p.numel() for p in net.parameters()) for name, net in nets.named().items()},
        "final": history[-1] if history else {},
        "history": history,
        **extra,
    }
    atomic.write_json(out / runs.METRICS, metrics)
    loss_curves(out / "loss_curves.png", history)
    write_samples(out / "samples.png", ema, samples, cfg.train.steps)
    return metrics


def train(cfg: Stage2Config, out_dir: str | Path) -> dict[str, Any]:
    """Run (or resume) stage II into `out_dir`; returns the metrics written to metrics.json."""
    validate(cfg)
    out = Path(out_dir)
    with process_runtime(cfg, out) as rt:
        parts = load_stage1(cfg.stage1, rt.device, cfg.loss.identity_embedder)
        data = prepare(cfg, parts, progress=cfg.train.progress and rt.rank == 0)
        nets, ema = build(cfg, rt.device)
        opts = build_optimizers(nets, cfg)
        folder = out / runs.CHECKPOINTS
        start, history, pending, resumed = resume(folder, nets, ema, opts, cfg, parts, rt)
        if resumed is None and cfg.train.init:
            start_from(Path(cfg.train.init), nets, ema, cfg)
        wrapped = {name: wrap(net, rt) for name, net in nets.named().items()}
        samples = sample_batch(parts, data, cfg, rt.device)
        t0 = time.perf_counter()
        bar = tqdm(
            total=cfg.train.steps,
            initial=start,
            desc="stage II",
            unit="step",
            disable=not cfg.train.progress or rt.rank != 0,
        )
        for step, raw in batches(data.train, cfg.train, rt, start):
            pending.append(train_step(nets, ema, wrapped, opts, parts, data, raw, step, cfg, rt))
            done = step + 1
            if done % cfg.train.log_every == 0 or done == cfg.train.steps:
                history.append(summarise(pending, done))
                pending = []
                h = history[-1]
                bar.set_postfix(
                    d=f"{h['d_real'] + h['d_fake']:.3f}",
                    adv=f"{h['g_adv']:.3f}",
                    cyc=f"{h['g_cycle']:.3f}",
                    heat=f"{h['g_heatmap']:.4f}",
                    cos=f"{h['identity_cosine']:.2f}",
                )
            if rt.rank == 0 and done % cfg.train.sample_every == 0:
                write_samples(out / "samples" / f"step-{done:08d}.png", ema, samples, done)
            if rt.rank == 0 and (done % cfg.train.checkpoint_every == 0 or done == cfg.train.steps):
                save_checkpoint(folder, done, nets, ema, opts, cfg, parts, history, pending)
            bar.update(1)
        bar.close()
        seconds = time.perf_counter() - t0
        if rt.rank != 0:
            return {}
        embedder = cfg.loss.identity_embedder
        extra = {
            **run_summary(cfg.train.steps, start, seconds, resumed, rt),
            "stage1": cfg.stage1,
            "identity_embedder": {"file": embedder, "sha256": file_sha256(Path(embedder))}
            if embedder
            else "stage-I adversary",
        }
        return write_outputs(out, nets, ema, cfg, parts, data, history, samples, extra)
