"""`simulate.py evaluate`: privacy (SFace, dlib) and utility (MTCNN, dlib) of one method on a face set."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `evaluate` sub-command."""
    p = subparsers.add_parser(
        "evaluate",
        help="privacy and utility of a method on a folder-per-identity face set",
        description=__doc__,
    )
    p.add_argument("--data", help="folder of <identity>/<image> files (e.g. ../shared/data/lfw-a)")
    p.add_argument("--method", help="method under test: clean, lowres8/16/32, blur2/4/8, pixelate16, defocus, zernike-random")
    p.add_argument("--min-images", type=int, help="keep identities with at least K readable images (default 10)")
    p.add_argument("--split", help="file of identity names (one per line) to evaluate on")
    p.add_argument("--out", help="output folder for report.json, report.md, PNGs and config.yaml")
    p.add_argument("--cache", help="cache folder for per-image results (default ~/.cache/obscura/evaluation)")
    p.add_argument("--workers", type=int, help="worker processes (default 2)")
    p.add_argument("--config", help="YAML/JSON file of evaluation settings")
    p.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE", help="override a setting")
    p.set_defaults(func=_evaluate)
    a = subparsers.add_parser(
        "evaluate-anonymizer",
        help="utility, identity leakage, diversity and realism of a stage-II anonymizer on test identities",
    )
    a.add_argument("--data", help="folder of <identity>/<image> files (e.g. ../shared/data/celeba-crops)")
    a.add_argument("--split", help="file of identity names to use (e.g. the stage-I run's splits/test.txt)")
    a.add_argument("--anonymizer", help="stage-II generator_ema.pt")
    a.add_argument("--source", help="capture (default) or lowres16: what the generator reads")
    a.add_argument("--out", help="output folder for report.json, report.md, examples.png and config.yaml")
    a.add_argument("--config", help="YAML/JSON file of evaluation.anonymization.AnonymizerEvalConfig settings")
    a.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE", help="override a setting")
    a.set_defaults(func=_evaluate_anonymizer)
    t = subparsers.add_parser(
        "evaluate-summary",
        help="one markdown table of the report.json files in or below the given folders",
    )
    t.add_argument("folders", nargs="+", help="run folders, or folders of run folders")
    t.add_argument("--out", help="also write the table to this file")
    t.add_argument("--plot", metavar="PNG", help="also draw SFace oracle rank-1 against landmark NME for every report")
    t.set_defaults(func=_summary)


def _evaluate(args: argparse.Namespace) -> int:
    """Resolve the configuration (file < --set < flags), run, print a summary."""
    from evaluation.evaluate import EvaluateConfig, run
    from obscura import config

    overrides = config.parse_overrides(args.overrides)
    flags = {
        "data": args.data,
        "method": args.method,
        "min_images": args.min_images,
        "split": args.split,
        "out": args.out,
        "cache_dir": args.cache,
        "workers": args.workers,
    }
    overrides.update({k: v for k, v in flags.items() if v is not None})
    cfg = config.load(EvaluateConfig, args.config, overrides)
    result = run(cfg)
    print(f"{result['method']} on {result['n_identities']} identities, {result['n_probes']} probes "
          f"({result['seconds']} s); report in {cfg.out}/report.md")
    for name, p in result["privacy"].items():
        print(f"  {name}: rank-1 {p['rank1']:.3f} (oracle {p['rank1_oracle']:.3f}), AUC {p['auc']:.3f}, "
              f"TAR@FAR=1e-3 {p['tar_at_far_1e-3']:.3f}, chance {p['chance']:.4f}")
    utility = result["utility"]
    for name in ("mtcnn", "dlib"):
        u = utility[name]
        print(f"  utility {name}: FD {u['fd']:.3f}, BB {u['bb']:.2f} px, LM {u['lm']:.2f} px, NME {u['nme']:.3f}")
    if "landmark_nme" in utility:
        print(f"  regressor landmarks on captures: NME {utility['landmark_nme']:.3f} over {utility['landmark_nme_pairs']} faces "
              f"(the mean shape: {utility['landmark_nme_mean_shape']:.3f})")
    return 0


def _evaluate_anonymizer(args: argparse.Namespace) -> int:
    """Resolve the configuration (file < --set < flags), run, print the headline figures."""
    from evaluation.anonymization import AnonymizerEvalConfig, run
    from obscura import config

    overrides = config.parse_overrides(args.overrides)
    flags = {"data": args.data, "split": args.split, "anonymizer": args.anonymizer, "source": args.source, "out": args.out}
    overrides.update({k: v for k, v in flags.items() if v is not None})
    r = run(config.load(AnonymizerEvalConfig, args.config, overrides))
    leak = r["identity_leakage"]
    print(f"anonymizer ({r['source']}) on {r['n_sources']} sources x {r['styles']} styles ({r['seconds']} s): "
          f"leakage SFace {leak['sface']:.4f} / dlib {leak['dlib']:.4f}, diversity {r['diversity_sface']:.3f}, "
          f"SFace Frechet {r['realism']['sface_frechet']:.3f}; MTCNN FD {r['utility']['mtcnn']['fd']:.3f}, "
          f"dlib FD {r['utility']['dlib']['fd']:.3f}; report in {args.out}/report.md")
    return 0


def _summary(args: argparse.Namespace) -> int:
    """Print (and optionally write) the table of every report found."""
    from evaluation.summary import find_reports, privacy_utility_png, table
    from obscura import atomic

    paths = find_reports(args.folders)
    text = table(paths)
    print(text, end="")
    if args.out:
        atomic.write_text(args.out, text)
    if args.plot:
        privacy_utility_png(paths, args.plot)
    return 0
