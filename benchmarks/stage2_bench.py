#!/usr/bin/env python3
"""Seconds per stage-II training step of a configuration, and the hours its train.steps would take.

Target (issue #5): the CPU configuration (configs/stage2_cpu.yaml) finishes in a few hours on 2 cores.
Times `--steps` full steps (two discriminator and two generator updates, the EMA) after `--warmup`
untimed ones, on the real training faces; checkpoint and sample-grid writes are not included.
On a shared machine the wall time is inflated by the other jobs; `cpu_seconds_per_step` (the
process's CPU time, all threads) is the work itself.
Prints JSON and writes it to `--json FILE`.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    """Time a few steps of the configuration and print the JSON summary."""
    import torch

    from anonymizer.runs import load_stage1
    from anonymizer.stage2 import stage2_train
    from anonymizer.stage2.stage2_config import Stage2Config, validate
    from anonymizer.stage2.stage2_data import prepare
    from anonymizer.training_runtime import batches, start_runtime
    from obscura.benchmark import emit
    from obscura.command_line import load_config

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/stage2_cpu.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--json", help="write the JSON summary here")
    args = p.parse_args(argv)
    cfg = load_config(Stage2Config, args)
    validate(cfg)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    rt = start_runtime(cfg.train.device)
    parts = load_stage1(cfg.stage1, rt.device)
    data = prepare(cfg, parts)
    nets, ema = stage2_train.build(cfg, rt.device)
    opts = stage2_train.build_optimizers(nets, cfg)
    wrapped = dict(nets.named())
    total = cfg.train.steps
    cfg.train.steps = args.warmup + args.steps
    times, cpu = [], []
    for step, raw in batches(data.train, cfg.train, rt, 0):
        start, start_cpu = time.perf_counter(), time.process_time()
        stage2_train.train_step(nets, ema, wrapped, opts, parts, data, raw, step, cfg, rt)
        if rt.device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    per_step = sum(times) / len(times)
    summary = {
        "benchmark": "stage-II training step",
        "config": args.config,
        "overrides": args.set,
        "img_size": cfg.model.img_size,
        "batch_size": cfg.train.batch_size,
        "crop_size": parts.crop_size,
        "device": str(rt.device),
        "threads": torch.get_num_threads(),
        "timed_steps": len(times),
        "seconds_per_step": round(per_step, 3),
        "seconds_per_step_min": round(min(times), 3),
        "cpu_seconds_per_step": round(sum(cpu) / len(cpu), 3),  # all threads: on a shared machine, the work itself
        "load_average_1min": round(os.getloadavg()[0], 2),
        "config_steps": total,
        "hours_for_config_steps": round(per_step * total / 3600, 2),
        "parameters": {name: sum(q.numel() for q in net.parameters()) for name, net in nets.named().items()},
        "machine": platform.processor() or platform.machine(),
    }
    emit(summary, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
