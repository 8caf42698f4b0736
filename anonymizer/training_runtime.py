"""What every trainer's loop shares: its settings, where it runs, how batches are drawn, how a run resumes.

One CPU, one GPU or many GPUs under torchrun (PyTorch DistributedDataParallel, one process per
device) run the same code. Every step re-seeds from (seed, step, rank) and draws its batch from a
per-epoch DistributedSampler permutation, so resuming from a checkpoint repeats the same steps.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler

from obscura import config
from obscura.config import bounded
from obscura.errors import ObscuraError

# Settings that may change between a run and its resumption (they do not change what is learned).
RESUMABLE_KEYS = (
    "train.steps",
    "train.progress",
    "train.workers",
    "train.threads",
    "train.device",
    "train.checkpoint_every",
    "train.log_every",
)


@dataclass
class LoopConfig:
    """The loop settings every trainer's `train` section has (a trainer's own section adds its learning rates)."""

    steps: int = bounded(2000, ge=1)
    batch_size: int = bounded(16, ge=1)
    checkpoint_every: int = bounded(100, ge=1)
    log_every: int = bounded(10, ge=1)
    seed: int = 0
    workers: int = bounded(0, ge=0)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = bounded(0, ge=0)  # torch CPU threads; 0 keeps torch's default
    progress: bool = True


@dataclass
class Runtime:
    """Where this process runs: device, rank and world size (1 without torchrun)."""

    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def distributed(self) -> bool:
        """True when launched by torchrun with more than one process."""
        return self.world > 1


def start_runtime(device: str) -> Runtime:
    """Join the torchrun process group if there is one, and pick this process's device."""
    if device != "auto" and not (device == "cpu" or device.startswith("cuda")):
        raise ObscuraError(f"config key 'train.device' is {device!r}; expected auto, cpu, cuda or cuda:N")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and device != "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ObscuraError(f"config key 'train.device' is {device!r} but torch sees no CUDA device")
    if world > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if cuda else "gloo")
        return Runtime(torch.device(f"cuda:{local}" if cuda else "cpu"), dist.get_rank(), world)
    if device == "auto":
        return Runtime(torch.device("cuda" if cuda else "cpu"))
    return Runtime(torch.device(device))


@contextmanager
def process_runtime(cfg: Any, out: Path) -> Iterator[Runtime]:
    """The process's Runtime for a trainer config with a `train` section: threads set, rank 0 writing
    the resolved config into `out`, and the torchrun process group left on exit."""
    if out.exists() and not out.is_dir():
        raise ObscuraError(f"--out {out}: exists and is not a folder")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    rt = start_runtime(cfg.train.device)
    try:
        if rt.rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            config.write_resolved(cfg, out)
        yield rt
    finally:
        if rt.distributed:
            dist.destroy_process_group()


def wrap(module: nn.Module, rt: Runtime) -> nn.Module:
    """DistributedDataParallel around a module when distributed, else the module itself."""
    if not rt.distributed:
        return module
    return DistributedDataParallel(module, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)


def step_seed(seed: int, step: int, rank: int) -> int:
    """The RNG seed of one step of one process (distinct per step and rank, fixed by the config)."""
    return (seed * 1_000_003 + step * 7919 + rank * 104_729) % (2**63 - 1)


def batches(dataset: Dataset, loop: LoopConfig, rt: Runtime, start: int) -> Iterator[tuple[int, Any]]:
    """(step, batch) from `start` to loop.steps: a per-epoch DistributedSampler permutation, cut into batches."""
    b = loop.batch_size
    sampler = DistributedSampler(
        dataset, num_replicas=rt.world, rank=rt.rank, shuffle=True, seed=loop.seed, drop_last=True
    )
    per_epoch = len(sampler) // b
    if per_epoch == 0:
        raise ObscuraError(
            f"config key 'train.batch_size' is {b}; the training set has only {len(sampler)} images per process"
        )
    step = start
    while step < loop.steps:
        epoch, offset = divmod(step, per_epoch)
        sampler.set_epoch(epoch)
        if hasattr(dataset, "set_epoch"):  # a dataset that draws per-epoch augmentations (stage I's moved faces)
            dataset.set_epoch(epoch)
        order = list(sampler)[offset * b : per_epoch * b]
        loader = DataLoader(
            Subset(dataset, order), batch_size=b, shuffle=False, num_workers=loop.workers, drop_last=True
        )
        for batch in loader:
            yield step, batch
            step += 1
            if step >= loop.steps:
                return


def comparable(cfg_dict: dict[str, Any], resumable: tuple[str, ...] = RESUMABLE_KEYS) -> dict[str, Any]:
    """The flattened configuration minus the keys a resumed run may change."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        else:
            flat[prefix] = node

    walk(cfg_dict, "")
    return {k: v for k, v in flat.items() if k not in resumable}


def refuse_changed_config(
    path: Path, cfg: Any, saved: dict[str, Any], resumable: tuple[str, ...] = RESUMABLE_KEYS
) -> None:
    """One-line error naming the first setting (beyond `resumable`) in which the checkpoint's run differs from `cfg`."""
    ours, theirs = comparable(config.to_dict(cfg), resumable), comparable(saved, resumable)
    for key in sorted(set(ours) | set(theirs)):
        if ours.get(key) != theirs.get(key):
            raise ObscuraError(
                f"{path} was written by a run with {key} = {theirs.get(key)!r}, this config has {ours.get(key)!r}; "
                "use a new --out folder or the same configuration"
            )


def run_summary(steps: int, start: int, seconds: float, resumed: str | None, rt: Runtime) -> dict[str, Any]:
    """What metrics.json says about this run: steps, resumption, time per step, device."""
    steps_run = steps - start
    return {
        "steps": steps,
        "resumed_from": resumed,
        "steps_this_run": steps_run,
        "seconds_this_run": seconds,
        "seconds_per_step": seconds / steps_run if steps_run else None,
        "device": str(rt.device),
        "world_size": rt.world,
    }
