"""The fair landmark judge: one regressor architecture, budget and data, trained on any method's images of moved faces.

dlib's landmarks on a degraded image say nothing about what a trained network could still find,
and a method's own regressor says as much about its training as about the method. The judge
asks every method the same question: the same HeatmapRegressor (JUDGE_REGRESSOR, fixed here, not
configurable), started from the same weights (`train.init`, e.g. a judge pretrained on clean
faces), trained for the same steps on the method's images of the training identities' faces, each
moved by a fresh random similarity transform and mirror (faces.moved_faces; the method sees the
whole moved frame, as evaluation applies it), and judged on moved faces of the test identities at
their fixed motions: NME over the inter-ocular distance (outer eye corners) against dlib's
landmarks on the clean aligned image, moved alike, next to the NME of answering the mean shape.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from anonymizer import checkpoint, runs
from anonymizer.nets import heatmaps
from anonymizer.nets.regressor import HeatmapRegressor, init_from, save_regressor
from anonymizer.stage1.stage1_config import DataConfig, RegressorConfig
from anonymizer.stage1.stage1_data import FaceCrops, held_out, prepare
from anonymizer.training_runtime import LoopConfig, batches, process_runtime, run_summary, step_seed
from evaluation import methods
from faces.moved_faces import fixed_motion
from obscura import atomic, config
from obscura.config import bounded
from obscura.errors import ObscuraError

JUDGE_REGRESSOR = RegressorConfig(base_channels=16, depth=4, stride=4, max_channels=128)
JUDGE_FILE = "judge_regressor.pt"
REPORT = "report.json"


def _judge_data() -> DataConfig:
    """Stage I's data settings (same face set, same identity split), without the validation faces."""
    return DataConfig(val_images=0)


@dataclass
class JudgeTrainConfig(LoopConfig):
    """The judge's budget: the same for every method."""

    steps: int = bounded(1000, ge=1)
    checkpoint_every: int = bounded(200, ge=1)
    lr: float = bounded(1e-3, gt=0)  # annealed to 0 over the steps (cosine)
    # "": a fresh regressor; else a judge_regressor.pt to start from (e.g. the judge trained on clean faces)
    init: str = ""


@dataclass
class JudgeConfig:
    """Everything that decides a judge run; written resolved next to its report."""

    method: str = "clean"
    data: DataConfig = field(default_factory=_judge_data)
    test_split: str = "test"
    test_images: int = bounded(600, ge=1)  # round-robin over the test identities
    train: JudgeTrainConfig = field(default_factory=JudgeTrainConfig)


def check(cfg: JudgeConfig) -> methods.Method:
    """Refuse a bad configuration before any image is read; returns the method."""
    config.check(cfg)
    if not cfg.data.moved:
        raise ObscuraError(
            "config key 'data.moved' is False; the judge measures landmarks on faces that move: expected True"
        )
    if cfg.test_split not in cfg.data.split_fractions:
        raise ObscuraError(
            f"config key 'test_split' is {cfg.test_split!r}; expected one of {sorted(cfg.data.split_fractions)}"
        )
    if cfg.train.init and not Path(cfg.train.init).is_file():
        raise ObscuraError(f"config key 'train.init' is {cfg.train.init!r}: no such file (expected a {JUDGE_FILE})")
    try:
        return methods.get(cfg.method)
    except ObscuraError as err:
        raise ObscuraError(f"config key 'method': {err}") from None


def build_regressor(init: str) -> HeatmapRegressor:
    """The judge's regressor, fresh or from a judge file of the same architecture and crop size."""
    model = HeatmapRegressor(**arch())
    if init:
        init_from(model, init, _judge_data().image_size, "train.init")
    return model.train()


def arch() -> dict[str, int]:
    """The fixed architecture, as save_regressor records it."""
    return {k: getattr(JUDGE_REGRESSOR, k) for k in ("base_channels", "depth", "stride", "max_channels")}


def train(
    model: HeatmapRegressor, data: FaceCrops, cfg: JudgeConfig, out: Path, rt: Any
) -> tuple[list[dict[str, float]], int]:
    """Heatmap-loss training on the method's images of moved training faces; resumes from out/checkpoints.

    Returns the history and the step this run started from.
    """
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    folder = out / runs.CHECKPOINTS
    start, history = 0, []
    found = checkpoint.latest(folder)
    if found is not None:
        state = found[1]
        model.load_state_dict(state["regressor"])
        opt.load_state_dict(state["opt"])
        start, history = int(state["step"]), list(state["history"])
    bar = tqdm(
        total=cfg.train.steps, initial=start, desc=f"landmark judge ({cfg.method})", disable=not cfg.train.progress
    )
    for step, (images, targets, _, marks) in batches(data, cfg.train, rt, start):
        torch.manual_seed(step_seed(cfg.train.seed, step, rt.rank))
        for group in opt.param_groups:
            group["lr"] = cfg.train.lr * 0.5 * (1.0 + math.cos(math.pi * step / cfg.train.steps))
        pred = model(images)
        loss = heatmaps.heatmap_loss(pred, targets, JUDGE_REGRESSOR.foreground_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            nme = heatmaps.nme(heatmaps.landmarks(pred, JUDGE_REGRESSOR.stride), marks).mean().item()
        history.append({"step": step + 1, "heatmap_loss": loss.item(), "nme": nme})
        bar.set_postfix(loss=f"{loss.item():.4f}", nme=f"{nme:.3f}")
        bar.update(1)
        if (step + 1) % cfg.train.checkpoint_every == 0 or step + 1 == cfg.train.steps:
            checkpoint.save_step(
                folder,
                step + 1,
                {"step": step + 1, "regressor": model.state_dict(), "opt": opt.state_dict(), "history": history},
            )
    bar.close()
    return history, start


@torch.no_grad()
def judge(model: HeatmapRegressor, test: FaceCrops, batch_size: int) -> dict[str, Any]:
    """NME of the regressor on the test faces, and of answering every face with their mean shape."""
    model.eval()
    found, truth = [], []
    for images, _, _, marks in DataLoader(test, batch_size=batch_size, shuffle=False):
        found.append(heatmaps.landmarks(model(images), JUDGE_REGRESSOR.stride))
        truth.append(marks)
    pred, ref = torch.cat(found), torch.cat(truth)
    nme = heatmaps.nme(pred, ref).numpy()
    mean_shape = heatmaps.nme(ref.mean(dim=0, keepdim=True).expand_as(ref), ref).numpy()
    return {
        "landmark_nme": float(nme.mean()),
        "landmark_nme_median": float(np.median(nme)),
        "landmark_nme_mean_shape": float(mean_shape.mean()),
        "n_faces": int(nme.size),
        "per_face_nme": nme.round(5).tolist(),
    }


def examples_png(path: Path, model: HeatmapRegressor, test: FaceCrops, method: str, count: int = 6) -> Path:
    """What the judge sees of a few moved test faces, with dlib's moved landmarks (green) and the judge's (red)."""
    matplotlib.use("Agg")
    items = [test[i] for i in np.linspace(0, len(test) - 1, min(count, len(test))).round().astype(int)]
    with torch.no_grad():
        found = heatmaps.landmarks(model.eval()(torch.stack([it[0] for it in items])), JUDGE_REGRESSOR.stride)
    fig, axes = plt.subplots(1, len(items), figsize=(2.6 * len(items), 2.9), squeeze=False)
    for ax, item, pred in zip(axes[0], items, found):
        ax.imshow(item[0].permute(1, 2, 0).numpy())
        ax.scatter(item[3][:, 0], item[3][:, 1], s=3, c="lime")
        ax.scatter(pred[:, 0], pred[:, 1], s=3, c="red")
        ax.axis("off")
    fig.suptitle(f"landmark judge on `{method}`: dlib on the clean face, moved (green); judge (red)", fontsize=9)
    fig.tight_layout()
    return atomic.write_figure(path, fig)


def run(cfg: JudgeConfig, out_dir: str | Path) -> dict[str, Any]:
    """Train the judge on the method's images of moved training faces and judge it on moved test faces; writes report.json."""
    method = check(cfg)
    out = Path(out_dir)
    with process_runtime(cfg, out) as rt:
        start = time.perf_counter()
        data = prepare(cfg.data, JUDGE_REGRESSOR, out, progress=cfg.train.progress)
        test = held_out(
            cfg.data, JUDGE_REGRESSOR, data.listing, data.parts[cfg.test_split], cfg.test_images, cfg.train.progress
        ).seen_through(method.apply)
        model = build_regressor(cfg.train.init)
        history, resumed_at = train(model, data.train.seen_through(method.apply), cfg, out, rt)
        seconds = time.perf_counter() - start
        result = judge(model, test, cfg.train.batch_size)
        save_regressor(out / JUDGE_FILE, model, arch(), cfg.data.image_size)
        motions = {path: fixed_motion(path, cfg.data.motion_seed).as_dict() for path in test.paths}
        atomic.write_json(out / "motions.json", {"motion_seed": cfg.data.motion_seed, "motions": motions})
        report = {
            "method": method.name,
            "method_description": method.description,
            "architecture": arch(),
            "init": cfg.train.init,
            "train_images": len(data.train),
            "test_split": cfg.test_split,
            "final_train": history[-1] if history else {},
            "history": history,
            **run_summary(cfg.train.steps, resumed_at, seconds, str(resumed_at) if resumed_at else None, rt),
            **result,
        }
        atomic.write_json(out / REPORT, report)
        examples_png(out / "examples.png", model, test, method.name)
    return report
