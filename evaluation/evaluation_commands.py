"""`evaluate` (privacy and utility of a method), `evaluate-anonymizer`, `evaluate-summary`, `attack-optic` (the adaptive
attacker), `judge-landmarks`, `attack-reconstruct` and `tolerance` (a fabricated optic, judged by the recognisers)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evaluation import (
    anonymization,
    evaluate,
    fabrication_judge,
    landmark_judge,
    methods,
    modified_domain,
    p3mask_judge,
    sensitivity,
    summary,
)
from evaluation.analysis import RECOGNISERS
from evaluation.attacks import adaptive_recogniser, learned_inversion, template_grid, template_inversion
from obscura import atomic
from obscura.command_line import add_config_options, load_config

PRIVACY_LOST_EXIT = 1  # tolerance: the report is written; the fabricated optic failed the privacy check


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the evaluation floor's sub-commands (the module docstring lists them)."""
    p = subparsers.add_parser(
        "evaluate",
        help="privacy and utility of a method on a folder-per-identity face set",
        description="Privacy (SFace, dlib) and utility (MTCNN, dlib, a stage-I regressor) of one method on a face set.",
    )
    p.add_argument("--data", help="folder of <identity>/<image> files (e.g. ../shared/data/lfw-a)")
    p.add_argument(
        "--method",
        help=f"method under test: {', '.join(methods.names())}, optic (the committed learned optic), "
        "optic:RUN (a stage-I output or optic .npz), psf:FILE.npy (a saved PSF, e.g. from tolerance)",
    )
    p.add_argument("--min-images", type=int, help="keep identities with at least K readable images (default 10)")
    p.add_argument("--split", help="file of identity names (one per line) to evaluate on")
    p.add_argument("--cache", help="cache folder for per-image results (default ~/.cache/obscura/evaluation)")
    p.add_argument("--workers", type=int, help="worker processes (default 2)")
    add_config_options(
        p,
        "YAML/JSON file of evaluation settings",
        "output folder for report.json, report.md, PNGs and config.yaml",
        out_required=False,
    )
    p.set_defaults(func=_evaluate)
    m = subparsers.add_parser(
        "recognise-modified",
        help="recognition with gallery and probes each clean or modified by a method (the 2x2 table)",
        description="Rank-1 and TAR for gallery {clean, modified} x probes {clean, modified} by SFace, dlib and the "
        "in-house recogniser, and recognition against Laplace noise on the stored templates.",
    )
    m.add_argument("--data", help="folder of <identity>/<image> files")
    m.add_argument("--method", help="method under test (as for evaluate), e.g. lowkey or pgd:epsilon=0.0314")
    m.add_argument("--split", help="file of identity names (one per line), e.g. weights/splits/test.txt")
    m.add_argument("--min-images", type=int, help="keep identities with at least K readable images (default 2)")
    m.add_argument("--cache", help="cache folder for per-image results (default ~/.cache/obscura/evaluation)")
    m.add_argument("--workers", type=int, help="worker processes (default 2)")
    add_config_options(
        m,
        "YAML/JSON file of evaluation.modified_domain.ModifiedDomainConfig",
        "output folder for report.json, report.md, modified_domain.png and config.yaml",
        out_required=False,
    )
    m.set_defaults(func=_recognise_modified)
    sens = subparsers.add_parser(
        "sensitivity",
        help="how far each modification moves a template (cosine distance, rank-1) as its strength grows",
        description=f"One curve per family ({', '.join(sorted(sensitivity.FAMILIES))}; optic by --set "
        "'optic=[LAMBDA:RUN,...]'): cosine distance of modified to clean templates and rank-1, per recogniser.",
    )
    sens.add_argument("--data", help="folder of <identity>/<image> files")
    sens.add_argument("--split", help="file of identity names (one per line), e.g. weights/splits/test.txt")
    sens.add_argument("--cache", help="cache folder for per-image results (default ~/.cache/obscura/evaluation)")
    sens.add_argument("--workers", type=int, help="worker processes (default 2)")
    add_config_options(
        sens,
        "YAML/JSON file of evaluation.sensitivity.SensitivityConfig",
        "output folder for sensitivity.json, sensitivity.png and config.yaml",
        out_required=False,
    )
    sens.set_defaults(func=_sensitivity)
    p3 = subparsers.add_parser(
        "judge-p3mask",
        help="per-user P3-masks (ensemble by focal diversity) judged by SFace and dlib: protection rate at FMR 1 %%",
        description="Learn one P3-mask per user from part of their images, then judge masked probes against clean "
        "galleries: protection rate, rank-1, the mask as a key, JPEG 75 / 0.5x resize / blur 1 robustness.",
    )
    p3.add_argument("--data", help="folder of <identity>/<image> files")
    p3.add_argument("--split", help="file of identity names (the users), e.g. weights/splits/test.txt")
    p3.add_argument("--users", type=int, help="the first K users of the split")
    add_config_options(
        p3,
        "YAML/JSON file of evaluation.p3mask_judge.P3JudgeConfig",
        "output folder for report.json, report.md, examples.png, masks/ and config.yaml",
        out_required=False,
    )
    p3.set_defaults(func=_judge_p3mask)
    a = subparsers.add_parser(
        "evaluate-anonymizer",
        help="utility, identity leakage, diversity and realism of a stage-II anonymizer on test identities",
    )
    a.add_argument("--data", help="folder of <identity>/<image> files (e.g. ../shared/data/celeba-crops)")
    a.add_argument("--split", help="file of identity names to use (e.g. the stage-I run's splits/test.txt)")
    a.add_argument("--anonymizer", help="stage-II generator_ema.pt")
    a.add_argument("--source", help="capture (default) or lowres16: what the generator reads")
    add_config_options(
        a,
        "YAML/JSON file of evaluation.anonymization.AnonymizerEvalConfig settings",
        "output folder for report.json, report.md, examples.png and config.yaml",
        out_required=False,
    )
    a.set_defaults(func=_evaluate_anonymizer)
    t = subparsers.add_parser(
        "evaluate-summary",
        help="one markdown table of the report.json files in or below the given folders",
    )
    t.add_argument("folders", nargs="+", help="run folders, or folders of run folders")
    t.add_argument("--out", help="also write the table to this file")
    t.add_argument("--plot", metavar="PNG", help="also draw SFace oracle rank-1 against landmark NME for every report")
    t.set_defaults(func=_summary)
    k = subparsers.add_parser(
        "attack-optic",
        help="fine-tune a recogniser on a stage-I optic's captures and judge it on unseen identities (adaptive attacker)",
        description="The adaptive attacker of a stage-I optic: fine-tune the run's adversary on captures of its training "
        "identities, then report rank-1 and verification on identities it never saw. Resumes from OUT/checkpoints.",
    )
    k.add_argument(
        "--run", required=True, metavar="DIR", help="stage-I output folder (config.yaml, optic.npz, adversary.pt)"
    )
    k.add_argument("--test-data", metavar="DIR", help="judge on this face folder instead of the run's test split")
    add_config_options(
        k, "YAML/JSON file of attacker settings", "output folder (report.json, attacker.pt, PNG, checkpoints)"
    )
    k.set_defaults(func=_attack)
    j = subparsers.add_parser(
        "judge-landmarks",
        help="the fair utility judge: one regressor trained on a method's images of moved faces, judged on moved test faces",
        description=landmark_judge.__doc__.splitlines()[0],
    )
    j.add_argument("--method", help="method under test (as for evaluate); default clean")
    add_config_options(
        j,
        "YAML/JSON file of evaluation.landmark_judge.JudgeConfig settings",
        "output folder (judge_regressor.pt, report.json, motions.json, examples.png, checkpoints)",
    )
    j.set_defaults(func=_judge_landmarks)
    r = subparsers.add_parser(
        "attack-reconstruct",
        help="train a learned inversion (ridge + U-Net) of a method on captures of the training identities",
        description=learned_inversion.__doc__.splitlines()[0],
    )
    r.add_argument("--method", help="method to invert (as for evaluate); default optic")
    add_config_options(
        r,
        "YAML/JSON file of evaluation.attacks.learned_inversion.InversionConfig settings",
        "output folder (inversion.pt, report.json, examples.png, checkpoints)",
    )
    r.set_defaults(func=_attack_reconstruct)
    v = subparsers.add_parser(
        "attack-templates",
        help="rebuild faces from stolen (optionally PE-MIU-protected) templates and judge them with other recognisers (RSR)",
        description=template_inversion.__doc__.splitlines()[0],
    )
    v.add_argument(
        "--data", help="face set: a folder of <identity>/<image> files or a name under the shared data (celeba-crops)"
    )
    v.add_argument(
        "--recogniser", help="whose templates leak: sface, inhouse, or capture (the optic's adaptive recogniser)"
    )
    v.add_argument("--protect", help="none or pemiu:BLOCK:PERMUTED (block size, number of blocks the secret key moves)")
    v.add_argument("--decoder", metavar="FILE", help="a trained decoder.pt: judge it without training")
    add_config_options(
        v,
        "YAML/JSON file of evaluation.attacks.template_inversion.TemplateAttackConfig settings",
        "output folder (report.json, report.md, examples.png, decoder.pt, splits/, checkpoints/)",
    )
    v.set_defaults(func=_attack_templates)
    g = subparsers.add_parser(
        "attack-templates-grid",
        help="RSR and PE-MIU's EER cost over block size x permuted blocks, from attack-templates reports",
    )
    g.add_argument("folders", nargs="+", help="attack-templates output folders, or folders of them")
    g.add_argument("--out", required=True, help="folder for grid.md, grid.json and grid.png")
    g.set_defaults(func=_attack_templates_grid)
    u = subparsers.add_parser(
        "attack-templates-publish",
        help="commit a finished attack-templates decoder to weights/ with its manifest entry",
    )
    u.add_argument("--run", required=True, help="the attack-templates output folder")
    u.add_argument("--name", required=True, help="the file name under weights/ (e.g. template_decoder_sface.pt)")
    u.add_argument("--command", required=True, help="the exact command that trained it (recorded in the manifest)")
    u.set_defaults(func=_attack_templates_publish)
    tol = subparsers.add_parser(
        "tolerance",
        help="the fabricated optic under fabrication and assembly errors; with --judge-data, judged by SFace and dlib",
        description="Simulate the fabricated optic with height, alignment and distance errors, check that its PSF keeps "
        "the design's privacy, and (with --judge-data) let the evaluation's recognisers judge it against the design.",
    )
    tol.add_argument("--optic", help="saved optic (.npz); default: the committed weights/optic.npz")
    tol.add_argument(
        "--judge-data",
        metavar="DIR",
        help="face folder (<identity>/<image>) on which SFace and dlib judge the fabricated PSF against the design "
        "(a seeded subset: judge.identities x judge.images_per_identity, default 20 x 10)",
    )
    add_config_options(tol, "YAML/JSON file of evaluation.fabrication_judge.JudgedToleranceConfig")
    tol.set_defaults(func=_tolerance)


def _recognise_modified(args: argparse.Namespace) -> int:
    """Resolve the configuration, run the 2x2 protocol, print each judge's table in one line."""
    flags = {
        "data": args.data,
        "method": args.method,
        "split": args.split,
        "min_images": args.min_images,
        "out": args.out,
        "cache_dir": args.cache,
        "workers": args.workers,
    }
    cfg = load_config(modified_domain.ModifiedDomainConfig, args, flags)
    result = modified_domain.run(cfg)
    print(
        f"{result['method']} on {result['n_identities']} identities, {result['n_probes']} probes ({result['seconds']} s)"
    )
    for judge, t in result["tables"].items():
        cells = ", ".join(
            f"{g}/{p} {t[f'gallery_{g}'][f'probes_{p}']['rank1']:.3f}"
            for g in modified_domain.SIDES
            for p in modified_domain.SIDES
        )
        print(f"  {judge} rank-1 (gallery/probes): {cells}")
    print(f"report in {cfg.out}/report.md")
    return 0


def _sensitivity(args: argparse.Namespace) -> int:
    """Resolve the configuration, run every family, print its strongest point per judge."""
    flags = {"data": args.data, "split": args.split, "out": args.out, "cache_dir": args.cache, "workers": args.workers}
    cfg = load_config(sensitivity.SensitivityConfig, args, flags)
    result = sensitivity.run(cfg)
    for family, found in result["families"].items():
        strongest = found["points"][-1]
        judged = ", ".join(
            f"{j} {strongest[j]['cosine_distance']:.3f} / {strongest[j]['rank1']:.3f}" for j in sensitivity.JUDGES
        )
        print(f"{family} at {strongest['strength']:g}: cosine distance / rank-1 {judged}")
    print(f"{result['seconds']} s; curves in {cfg.out}/sensitivity.png")
    return 0


def _judge_p3mask(args: argparse.Namespace) -> int:
    """Resolve the configuration, learn the masks, print each judge's protection rate."""
    flags = {"data": args.data, "split": args.split, "users": args.users, "out": args.out}
    cfg = load_config(p3mask_judge.P3JudgeConfig, args, flags)
    result = p3mask_judge.run(cfg)
    print(
        f"{result['users']} users, {result['probes']} probes, SSIM {result['ssim_mean']:.3f} (min "
        f"{result['ssim_min']:.3f}), {result['seconds_per_mask'] or 0:.0f} s per mask, ensemble {result['ensemble']}"
    )
    for judge, found in result["judges"].items():
        cells = ", ".join(f"{v} {f['protection_rate']:.3f}" for v, f in found.items())
        print(f"  {judge} protection rate: {cells}")
    print(f"report in {cfg.out}/report.md")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    """Resolve the configuration (file < --set < flags), run, print a summary."""
    flags = {
        "data": args.data,
        "method": args.method,
        "min_images": args.min_images,
        "split": args.split,
        "out": args.out,
        "cache_dir": args.cache,
        "workers": args.workers,
    }
    cfg = load_config(evaluate.EvaluateConfig, args, flags)
    result = evaluate.run(cfg)
    print(
        f"{result['method']} on {result['n_identities']} identities, {result['n_probes']} probes "
        f"({result['seconds']} s); report in {cfg.out}/report.md"
    )
    for name in RECOGNISERS:
        p = result["privacy"][name]
        print(
            f"  {name}: rank-1 {p['rank1']:.3f} (oracle {p['rank1_oracle']:.3f}), AUC {p['auc']:.3f}, "
            f"TAR@FAR=1e-3 {p['tar_at_far_1e-3']:.3f}, chance {p['chance']:.4f}"
        )
    for attacker, by_recogniser in result["privacy"].get("reconstruction", {}).items():
        for name in RECOGNISERS:
            p = by_recogniser[name]
            print(
                f"  {name} after {by_recogniser['attacker']}: rank-1 oracle {p['rank1_oracle']:.3f}, "
                f"AUC {p['auc']:.3f}, TAR@FAR=1e-3 {p['tar_at_far_1e-3']:.3f}"
            )
    utility = result["utility"]
    for name in ("mtcnn", "dlib"):
        u = utility[name]
        print(f"  utility {name}: FD {u['fd']:.3f}, BB {u['bb']:.2f} px, LM {u['lm']:.2f} px, NME {u['nme']:.3f}")
    if "landmark_nme" in utility:
        print(
            f"  regressor landmarks on captures: NME {utility['landmark_nme']:.3f} over {utility['landmark_nme_pairs']} faces "
            f"(the mean shape: {utility['landmark_nme_mean_shape']:.3f})"
        )
    return 0


def _evaluate_anonymizer(args: argparse.Namespace) -> int:
    """Resolve the configuration (file < --set < flags), run, print the headline figures."""
    flags = {
        "data": args.data,
        "split": args.split,
        "anonymizer": args.anonymizer,
        "source": args.source,
        "out": args.out,
    }
    r = anonymization.run(load_config(anonymization.AnonymizerEvalConfig, args, flags))
    leak = r["identity_leakage"]
    print(
        f"anonymizer ({r['source']}) on {r['n_sources']} sources x {r['styles']} styles ({r['seconds']} s): "
        f"leakage SFace {leak['sface']:.4f} / dlib {leak['dlib']:.4f}, diversity {r['diversity_sface']:.3f}, "
        f"SFace Frechet {r['realism']['sface_frechet']:.3f}; MTCNN FD {r['utility']['mtcnn']['fd']:.3f}, "
        f"dlib FD {r['utility']['dlib']['fd']:.3f}; report in {args.out}/report.md"
    )
    return 0


def _summary(args: argparse.Namespace) -> int:
    """Print (and optionally write) the table of every report found."""
    paths = summary.find_reports(args.folders)
    text = summary.table(paths)
    print(text, end="")
    if args.out:
        atomic.write_text(args.out, text)
    if args.plot:
        summary.privacy_utility_png(paths, args.plot)
    return 0


def _attack(args: argparse.Namespace) -> int:
    """Fine-tune and judge the adaptive attacker; print its figures on the unseen identities."""
    flags = {"run": args.run, "out": args.out, "test_data": args.test_data}
    result = adaptive_recogniser.run(load_config(adaptive_recogniser.AttackConfig, args, flags))
    print(
        f"adaptive attacker on {result['n_identities']} unseen identities, {result['n_probes']} probes "
        f"(chance {result['chance']:.4f}, {result['seconds']} s); report in {args.out}/report.json"
    )
    for name in adaptive_recogniser.PROTOCOLS:
        r = result[name]
        print(f"  {name}: rank-1 {r['rank1']:.3f}, AUC {r['auc']:.3f}, TAR@FAR=1e-3 {r['tar_at_far_1e-3']:.3f}")
    return 0


def _judge_landmarks(args: argparse.Namespace) -> int:
    """Train and judge the landmark judge on one method; print its NME beside the mean shape's."""
    r = landmark_judge.run(load_config(landmark_judge.JudgeConfig, args, {"method": args.method}), args.out)
    print(
        f"landmark judge on {r['method']}: NME {r['landmark_nme']:.4f} on {r['n_faces']} moved test faces "
        f"(the mean shape: {r['landmark_nme_mean_shape']:.4f}); {r['seconds_this_run']:.0f} s; report in {args.out}/report.json"
    )
    return 0


def _attack_reconstruct(args: argparse.Namespace) -> int:
    """Train the learned inversion of one method; print where it is and how to use it."""
    r = learned_inversion.run(load_config(learned_inversion.InversionConfig, args, {"method": args.method}), args.out)
    print(
        f"learned inversion of {r['method']}: {r['train_images']} training images of {r['train_identities']} identities, "
        f"ridge weight {r['ridge']['lambda']:g}, {r['seconds']:.0f} s; judge it with "
        f"evaluate --set 'reconstruction=[learned:{args.out}/{learned_inversion.INVERSION_FILE}]'"
    )
    return 0


def _attack_templates(args: argparse.Namespace) -> int:
    """Train or load the template decoder, judge its rebuilds; print the RSR headline."""
    flags = {
        "data": args.data,
        "recogniser": args.recogniser,
        "protect": args.protect,
        "decoder": args.decoder,
        "out": args.out,
    }
    r = template_inversion.run(load_config(template_inversion.TemplateAttackConfig, args, flags))
    print(
        f"{r['recogniser']} templates ({r['protection']}), {r['test']['rebuilt']} test faces rebuilt "
        f"(wall {r['wall_seconds']:.0f} s, CPU {r['cpu_seconds']:.0f} s); report in {args.out}/report.md"
    )
    for name, j in r["rsr"].items():
        s, o = j["same_image"], j["other_images"]
        print(
            f"  RSR by {name}: same image {100 * s['0.001']:.1f} % / {100 * s['0.01']:.1f} % at FMR 0.1 % / 1 %; "
            f"other images {100 * o['0.001']:.1f} % / {100 * o['0.01']:.1f} %"
        )
    v = r["verification"]
    for name in ("unprotected", "protected"):
        if name in v:
            print(
                f"  {name} {r['recogniser']} EER {100 * v[name]['eer']:.2f} %, TAR@FMR 1 % {100 * v[name]['tar_at_fmr_0.01']:.1f} %"
            )
    return 0


def _attack_templates_grid(args: argparse.Namespace) -> int:
    """Gather attack-templates reports into the block size x permuted blocks grid."""
    text = template_grid.write(args.folders, args.out)
    print(text, end="")
    return 0


def _attack_templates_publish(args: argparse.Namespace) -> int:
    """Copy a decoder into weights/ and record it in the manifest."""
    print(f"published {template_inversion.publish(args.run, args.name, args.command)} (weights/manifest.json updated)")
    return 0


def _tolerance(args: argparse.Namespace) -> int:
    """Run the tolerance sweep (and the recognisers' judge); print the summary; exit 1 when privacy is lost."""
    cfg = load_config(
        fabrication_judge.JudgedToleranceConfig, args, {"optic": args.optic, "judge.data": args.judge_data}
    )
    report = fabrication_judge.run(cfg, Path(args.out))
    for row in report["sweeps"]:
        print(f"  {row['error']}: " + ", ".join(f"{v:g} -> {c:.3f}" for v, c in zip(row["values"], row["correlation"])))
    print(
        f"tolerance: fabricated vs design PSF correlation {report['fabricated_correlation']:.3f}; "
        f"tolerances at correlation {report['min_correlation']:g}: "
        + ", ".join(f"{r['error']} {r['tolerance']:g}" for r in report["sweeps"])
        + f" -> {args.out}/tolerance.json"
    )
    check = report["privacy_check"]
    judge = check["recognisers"]
    if isinstance(judge, dict):
        print(
            f"tolerance: recognisers on {judge['n_identities']} identities, {judge['n_probes']} probes "
            f"({judge['seconds']:.0f} s; reports in {args.out}/judge/):"
        )
        for name, figures in judge["figures"].items():
            print(
                f"  {name}: "
                + "; ".join(
                    f"{figure} design {f['design']:.3f}, fabricated {f['fabricated']:.3f} "
                    f"[{f['fabricated_ci95'][0]:.3f}, {f['fabricated_ci95'][1]:.3f}], chance {f['chance']:.3f}"
                    for figure, f in figures.items()
                )
            )
        if judge["passed"]:
            widest = max(f["ci_half_width"] for figures in judge["figures"].values() for f in figures.values())
            print(
                "tolerance: recognisers: no loss beyond the design, chance and the allowed gain "
                f"(this subset resolves about +-{widest:.3f}; more identities resolve less)"
            )
    else:
        print(f"tolerance: recognisers not run: {judge}")
    for failure in check["failures"]:
        print(f"tolerance: FAIL: {failure}", file=sys.stderr)
    if not check["passed"]:
        print("tolerance: FAIL: the fabricated optic does not keep the design's privacy", file=sys.stderr)
        return PRIVACY_LOST_EXIT
    judged = "PSF correlation, centre spot" + (" and the recognisers" if isinstance(judge, dict) else "")
    print(f"tolerance: privacy check passed ({judged})")
    return 0
