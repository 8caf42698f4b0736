#!/usr/bin/env python3
"""Speed of one evaluation run (both recognisers, utility detectors) on LFW-a identities with >= 10 images.

Target (issue #3): <= 600 s on 2 cores for one method. By default the per-image cache starts empty
(a fresh folder), so the figure includes the clean-image pass. `--warm-from DIR` seeds a fresh cache
with the clean-image results of the cache DIR and none of its method results: the usual case of a
new method on data already evaluated. `--cache DIR` runs in DIR as it is.
Prints JSON and writes it to `--json FILE`.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_S = 600.0


def seed_clean_results(source: Path, dest: Path) -> None:
    """Copy the clean-image records of the cache `source` (current model set) into the cache `dest`."""
    from faces.result_cache import ResultCache

    clean = ResultCache(source, "clean").folder
    if not clean.is_dir():
        raise SystemExit(f"evaluation_bench.py: error: --warm-from {source}: no clean-image results under {clean}")
    shutil.copytree(clean, ResultCache(dest, "clean").folder)


def main(argv: list[str] | None = None) -> int:
    """Run one evaluation, time it, print and write the JSON summary."""
    from evaluation.evaluate import EvaluateConfig, run
    from obscura.benchmark import emit
    from obscura.paths import shared_data_dir

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(shared_data_dir() / "lfw-a"))
    p.add_argument("--method", default="lowres16")
    p.add_argument("--min-images", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cache", help="cache folder (default: a fresh one; an empty or new folder = cold run)")
    p.add_argument(
        "--warm-from", help="copy this cache's clean-image results into a fresh cache (a warm run of the method)"
    )
    p.add_argument("--out", help="report folder (default: a temporary one)")
    p.add_argument("--json", help="write the JSON summary here")
    args = p.parse_args(argv)
    if args.cache and args.warm_from:
        raise SystemExit("evaluation_bench.py: error: --cache and --warm-from exclude each other")
    os.environ["OMP_NUM_THREADS"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = Path(args.cache or Path(tmp) / "cache")
        if args.warm_from:
            seed_clean_results(Path(args.warm_from), cache_dir)
        cold = not cache_dir.is_dir() or not any(cache_dir.iterdir())
        cfg = EvaluateConfig(
            data=args.data,
            method=args.method,
            out=args.out or str(Path(tmp) / "out"),
            min_images=args.min_images,
            cache_dir=str(cache_dir),
            workers=args.workers,
        )
        start = time.perf_counter()
        result = run(cfg)
        seconds = time.perf_counter() - start
    cpu = sum(
        getattr(resource.getrusage(who), f)
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        for f in ("ru_utime", "ru_stime")
    )
    summary = {
        "benchmark": "evaluation one method, both recognisers + utility",
        "method": args.method,
        "data": args.data,
        "min_images": args.min_images,
        "n_identities": result["n_identities"],
        "n_images": result["n_images"],
        "n_probes": result["n_probes"],
        "workers": args.workers,
        "cache": "cold" if cold else "warm",
        "seconds": round(seconds, 1),
        "images_per_s": round(result["n_images"] / seconds, 2),
        # CPU time of this process and its workers; / workers = the wall time on idle dedicated cores
        "cpu_seconds": round(cpu, 1),
        "cpu_seconds_per_worker": round(cpu / args.workers, 1),
        "target_s": TARGET_S,
        "meets_target": seconds <= TARGET_S,
        "cpu_count": os.cpu_count(),
        "load_average_1min_after": round(os.getloadavg()[0], 2),
        "machine": platform.processor() or platform.machine(),
    }
    emit(summary, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
