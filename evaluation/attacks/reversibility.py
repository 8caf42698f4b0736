"""Judging rebuilt faces: the reversibility success rate (RSR) by recognisers other than the inverted one, and PE-MIU's cost.

A rebuilt face counts as a success when a judge verifies it as its source at a false-match rate
set on the judge's own impostor pairs: every pair of clean test images of two different
identities. "The source" is read two ways: the same image's clean template (was this photo
rebuilt?), and the identity's other images (would the rebuilt face pass as this person?). Next
to both stands the judge's rate on real photos (two clean images of one identity at the same
threshold), the most a rebuild could hope for against other images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from evaluation import metrics
from faces.face_models import DlibHog, DlibResNet
from optics.image_io import from_uint8
from protect import pemiu

FMRS = (1e-3, 1e-2)
JUDGES_OF = {"sface": ("dlib", "inhouse"), "inhouse": ("sface", "dlib"), "capture": ("sface", "dlib")}
BATCH = 64


@dataclass
class Judge:
    """A recogniser reading rebuilt faces (uint8 N x 112 x 112 x 3) -> (unit templates, whether its detector found the face)."""

    name: str
    read: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def network_judge(name: str, net: nn.Module) -> Judge:
    """A torch recogniser reading the 112 px frame directly (SFace: its aligned crop; in-house: it resizes to its own size)."""

    @torch.no_grad()
    def read(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = [F.normalize(net(from_uint8(faces[i : i + BATCH]))) for i in range(0, len(faces), BATCH)]
        return torch.cat(out).double().numpy(), np.ones(len(faces), bool)

    return Judge(name, read)


def dlib_judge(usual_box: np.ndarray, progress: bool = False) -> Judge:
    """dlib as on any photo (HOG face, 68 points, ResNet); where HOG finds none, the 68 points inside the frame's usual face box."""
    hog, resnet = DlibHog(), DlibResNet()

    def read(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        embs, found = [], []
        for img in tqdm(faces, desc="dlib on rebuilt faces", unit="img", disable=not progress):
            face = hog.detect(img).central(img.shape)
            found.append(face is not None)
            embs.append(resnet.embed(img, face if face is not None else hog.face_in_box(img, usual_box)))
        return np.stack(embs), np.array(found)

    return Judge("dlib", read)


def usual_dlib_box(faces: np.ndarray) -> np.ndarray:
    """The median HOG box (x, y, w, h) over clean faces of the frame (training faces: what the attacker can measure)."""
    hog = DlibHog()
    boxes = [f.box for f in (hog.detect(img).central(img.shape) for img in faces) if f is not None]
    return np.median(np.stack(boxes), axis=0) if boxes else np.array([16.0, 16.0, 80.0, 80.0])


def rsr(
    rebuilt: np.ndarray,
    sources: np.ndarray,
    labels: np.ndarray,
    source_found: np.ndarray,
    rebuilt_rows: np.ndarray,
    mean_face: np.ndarray | None = None,
) -> dict[str, Any]:
    """RSR of rebuilt templates (judge's, one per rebuilt image) against the judge's clean templates of the test images.

    `sources` / `source_found` / `labels` cover every test image; `rebuilt_rows` says which test image each rebuild is of.
    `mean_face`, the judge's template of the training faces' mean image, is the attacker who ignores the template:
    its rate against the same sources is the floor an RSR must be read against.
    """
    keep = source_found[rebuilt_rows]
    all_rebuilt = rebuilt
    rows, rebuilt = rebuilt_rows[keep], rebuilt[keep]
    clean, clean_labels = sources[source_found], labels[source_found]
    impostors = metrics.impostor_scores(clean, clean_labels)
    thresholds = {f"{fmr:g}": metrics.threshold_at_fmr(impostors, fmr) for fmr in FMRS}
    same = np.einsum("ij,ij->i", rebuilt, sources[rows])
    index = np.flatnonzero(source_found)
    other = []
    for r, row in zip(rebuilt, rows):
        mates = index[(labels[index] == labels[row]) & (index != row)]
        other.append(sources[mates] @ r)
    other_scores = np.concatenate(other) if other else np.zeros(0)
    genuine = [sources[index[(labels[index] == labels[i]) & (index > i)]] @ sources[i] for i in index]
    genuine_scores = np.concatenate(genuine) if genuine else np.zeros(0)
    floor = (
        {}
        if mean_face is None
        else {
            "mean_face_same_image": {k: metrics.acceptance(sources[rows] @ mean_face, t) for k, t in thresholds.items()}
        }
    )
    return {
        **floor,
        "thresholds": thresholds,
        "impostor_pairs": int(impostors.size),
        "n_rebuilt": int(len(rows)),
        "same_image": {k: metrics.acceptance(same, t) for k, t in thresholds.items()},
        "other_images": {k: metrics.acceptance(other_scores, t) for k, t in thresholds.items()},
        "other_image_pairs": int(other_scores.size),
        "clean_genuine": {k: metrics.acceptance(genuine_scores, t) for k, t in thresholds.items()},
        "clean_genuine_pairs": int(genuine_scores.size),
        "mean_same_image_cosine": float(same.mean()) if same.size else float("nan"),
        # one entry per rebuilt face, in the order given (None where the judge found no face in the source)
        "per_image_same": [
            round(float(v), 5) if k else None
            for v, k in zip(np.einsum("ij,ij->i", all_rebuilt, sources[rebuilt_rows]), keep)
        ],
    }


def gallery_split(labels: np.ndarray) -> np.ndarray:
    """True for the first image of each identity (the gallery); the rest are probes."""
    first = np.zeros(len(labels), bool)
    first[np.unique(labels, return_index=True)[1]] = True
    return first


def verification(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """EER, AUC and TAR at FMR 0.1 % and 1 % of a probes x gallery score matrix (`labels`: each probe's gallery column)."""
    pairs = metrics.pair_scores(scores, labels)
    out = {"auc": 0.0, "eer": 0.0}
    for fmr in FMRS:
        v = metrics.verification(pairs, fmr)
        out.update(auc=v["auc"], eer=v["eer"])
        out[f"tar_at_fmr_{fmr:g}"] = v["tar_at_far"]
    return out


def protection_cost(
    templates: np.ndarray, protected: np.ndarray, labels: np.ndarray, setting: pemiu.PeMiu | None
) -> dict[str, Any]:
    """Verification of the inverted recogniser's own templates without and with PE-MIU (gallery: first image of each identity)."""
    gallery = gallery_split(labels)
    ids = labels[gallery]
    column = np.searchsorted(ids, labels[~gallery])
    plain = verification(templates[~gallery] @ templates[gallery].T, column)
    result = {"n_gallery": int(gallery.sum()), "n_probes": int((~gallery).sum()), "unprotected": plain}
    if setting is not None:
        scores = pemiu.score_matrix(protected[~gallery], protected[gallery], setting.block)
        result["protected"] = verification(scores, column)
        result["eer_cost_points"] = 100.0 * (result["protected"]["eer"] - plain["eer"])
    return result
