"""Per-image work: faces and embeddings of a clean image and of its output under a method.

Runs in worker processes; each loads the face models once. Results are plain dicts of arrays
(cacheable): `<recogniser>.box/.lm/.emb` for the clean image, `<recogniser>.auto` (detected and
aligned on the output itself) and `<recogniser>.oracle` (output aligned with the clean image's
landmarks) for the output, `util.<detector>.box/.lm` at 256x256 for utility, for capture methods
with a regressor `regressor.lm` (its 68 landmarks on the output, image pixels), and where asked
`inhouse.emb` / `inhouse.auto` (a torch recogniser of the training identities, `InhouseTemplates`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from anonymizer import runs
from evaluation.attacks.face_templates import inhouse_crop
from evaluation.attacks.reconstruction import Attacker, build
from evaluation.methods import Method, get
from faces.face_models import Face, recognitions, utility_detectors
from faces.face_sets import read_rgb
from faces.moved_faces import fixed_motion, move_image
from faces.result_cache import ResultCache
from obscura import paths
from obscura.digest import file_sha256
from obscura.errors import ObscuraError
from optics.image_io import from_uint8

RECOGNISERS = ("sface", "dlib")
UTILITY_DETECTORS = ("mtcnn", "dlib")
UTILITY_SIZE = 256
INHOUSE = "inhouse"  # the optional third recogniser's record keys: inhouse.emb (clean), inhouse.auto (output)


@dataclass(frozen=True)
class Task:
    """One image, whether its clean embeddings are needed (gallery images, or the clean method), and whether
    the reconstruction attackers rebuild its output (probes)."""

    path: str
    need_clean_embedding: bool
    rebuild: bool = False


def inhouse_file(spec: str) -> str:
    """The in-house judge's recogniser file: `spec`, or "" for the committed one; a missing file is one line."""
    file = spec or str(paths.WEIGHTS_DIR / runs.INHOUSE_RECOGNISER)
    if not Path(file).is_file():
        raise ObscuraError(f"config key 'inhouse' is {file!r}: no such file (expected a stage-I attacker.pt)")
    return file


class InhouseTemplates:
    """A torch recogniser of the training identities as a third judge: unit templates of an image's centre crop.

    The committed in-house recogniser, or for a capture method the adaptive attacker trained on its
    captures. It reads the crop whole (no detector), so it always finds a face.
    """

    def __init__(self, path: str, cache_root: str | Path, method_key: str) -> None:
        self.embedder = runs.load_committed_classifier(Path(path)).embedder.eval().requires_grad_(False)
        digest = file_sha256(path)[:16]
        self.clean_cache = ResultCache(cache_root, f"{INHOUSE}-{digest}")
        self.method_cache = ResultCache(cache_root, f"{INHOUSE}-{digest}-method-{method_key}")

    @torch.no_grad()
    def template(self, image: np.ndarray, source: str) -> np.ndarray:
        """The unit template of one sRGB image."""
        crop = from_uint8(inhouse_crop(image, source))[None]
        return F.normalize(self.embedder(crop))[0].double().numpy()


class Analyzer:
    """Face models plus caches for one method; `run(task)` returns (clean record, output record)."""

    def __init__(
        self,
        method: Method,
        cache_root: str | Path,
        attackers: tuple[Attacker, ...] = (),
        motion_seed: int = 0,
        inhouse: str = "",
    ) -> None:
        cv2.setNumThreads(1)
        self.method = method
        self.recognitions = recognitions()
        self.utility = utility_detectors(self.recognitions["dlib"].detector)
        self.clean_cache = ResultCache(cache_root, "clean")
        self.method_cache = ResultCache(cache_root, f"method-{method.cache_key}")
        self.attackers = [(a, ResultCache(cache_root, f"method-{method.cache_key}-{a.cache_key}")) for a in attackers]
        self.motion_seed = motion_seed
        self.inhouse = InhouseTemplates(inhouse, cache_root, method.cache_key) if inhouse else None
        self.last_output: tuple[str, np.ndarray] | None = None  # (image hash, method output) of the last apply

    def run(self, task: Task) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Clean and output records of one image, from the caches where possible."""
        key = file_sha256(task.path)
        clean = self.clean_cache.get(key)
        image = None
        if clean is None or (task.need_clean_embedding and "embedded" not in clean):
            image, _ = read_rgb(task.path)
            clean = self._clean(image, task.need_clean_embedding, clean)
            self.clean_cache.put(key, clean)
        out = output_of_clean(clean) if self.method.is_identity else self.method_cache.get(key)
        if out is None or (self.method.landmarks is not None and "regressor.lm_moved" not in out):
            image = read_rgb(task.path)[0] if image is None else image
            self.last_output = (key, self.method.apply(image))
            out = self._output(self.last_output[1], clean)
            if self.method.landmarks is not None:
                moved = self.method.apply(move_image(image, fixed_motion(task.path, self.motion_seed)))
                out["regressor.lm_moved"] = np.asarray(self.method.landmarks(moved), dtype=np.float64)
            self.method_cache.put(key, out)
        if task.rebuild and not self.method.is_identity:
            out = {**out, **self._rebuilt(task.path, key, clean, image)}
        if self.inhouse is not None:
            clean, out = self._with_inhouse(task.path, key, clean, out)
        return clean, out

    def _with_inhouse(self, path: str, key: str, clean: dict, out: dict) -> tuple[dict, dict]:
        """The records with the in-house templates of the clean image and of the method's output added."""
        assert self.inhouse is not None
        clean_rec = self.inhouse.clean_cache.get(key)
        if clean_rec is None:
            clean_rec = {"emb": self.inhouse.template(read_rgb(path)[0], path)}
            self.inhouse.clean_cache.put(key, clean_rec)
        out_rec = clean_rec if self.method.is_identity else self.inhouse.method_cache.get(key)
        if out_rec is None:
            last = self.last_output
            output = last[1] if last is not None and last[0] == key else self.method.apply(read_rgb(path)[0])
            out_rec = {"emb": self.inhouse.template(output, path)}
            self.inhouse.method_cache.put(key, out_rec)
        return {**clean, f"{INHOUSE}.emb": clean_rec["emb"]}, {**out, f"{INHOUSE}.auto": out_rec["emb"]}

    def _rebuilt(self, path: str, key: str, clean: dict, image: np.ndarray | None) -> dict[str, np.ndarray]:
        """Recognisers' records of each attacker's rebuild of the output, keyed `recon.<attacker>.<recogniser>...`."""
        found: dict[str, np.ndarray] = {}
        for attacker, cache in self.attackers:
            rec = cache.get(key)
            if rec is None:
                image = read_rgb(path)[0] if image is None else image
                rebuilt = attacker.rebuild(self.method.apply(image))
                rec = self._embedded(rebuilt, clean)
                cache.put(key, rec)
            found.update({f"recon.{attacker.name}.{k}": v for k, v in rec.items()})
        return found

    def _clean(self, image: np.ndarray, embed: bool, old: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
        """Faces (and optionally embeddings) of the clean image, plus its 256x256 utility detections."""
        rec: dict[str, np.ndarray] = dict(old or {})
        if old is None:
            for name, r in self.recognitions.items():
                _put_face(rec, name, r.detector.detect(image).central(image.shape))
            rec.update(self._utility(image))
        if embed:
            for name, r in self.recognitions.items():
                face = face_from(rec, name)
                if face is not None:
                    rec[f"{name}.emb"] = r.embed(image, face)
            rec["embedded"] = np.array(1)
        return rec

    def _output(self, output: np.ndarray, clean: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Embeddings (auto, oracle) and utility detections of the method's output, and the regressor's landmarks."""
        rec = self._embedded(output, clean)
        rec.update(self._utility(output))
        if self.method.landmarks is not None:
            rec["regressor.lm"] = np.asarray(self.method.landmarks(output), dtype=np.float64)
        return rec

    def _embedded(self, output: np.ndarray, clean: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Embeddings of an output: aligned on itself (auto) and with clean landmarks (oracle)."""
        rec: dict[str, np.ndarray] = {}
        for name, r in self.recognitions.items():
            face = r.detector.detect(output).central(output.shape)
            if face is not None:
                rec[f"{name}.auto"] = r.embed(output, face)
            clean_face = face_from(clean, name)
            if clean_face is not None and face is not None and _same_face(face, clean_face):
                rec[f"{name}.oracle"] = rec[f"{name}.auto"]  # identical alignment, identical embedding
            elif clean_face is not None:
                rec[f"{name}.oracle"] = r.embed(output, clean_face)
        return rec

    def _utility(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Utility detections on the image resized to 256x256."""

        frame = cv2.resize(image, (UTILITY_SIZE, UTILITY_SIZE), interpolation=cv2.INTER_LINEAR)
        rec: dict[str, np.ndarray] = {}
        for name, det in self.utility.items():
            _put_face(rec, f"util.{name}", det.detect(frame).central(frame.shape))
        return rec


def output_of_clean(clean: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The output record of the identity method: the clean embeddings serve as auto and oracle."""
    out = {k: v for k, v in clean.items() if k.startswith("util.")}
    for name in RECOGNISERS:
        if f"{name}.emb" in clean:
            out[f"{name}.auto"] = clean[f"{name}.emb"]
            out[f"{name}.oracle"] = clean[f"{name}.emb"]
    return out


def _same_face(a: Face, b: Face) -> bool:
    """True when two faces would be aligned identically (dlib's integer landmarks often agree)."""
    return np.array_equal(a.box, b.box) and np.array_equal(a.landmarks, b.landmarks)


def _put_face(rec: dict[str, np.ndarray], prefix: str, face: Face | None) -> None:
    if face is not None:
        rec[f"{prefix}.box"] = face.box
        rec[f"{prefix}.lm"] = face.landmarks


def face_from(rec: dict[str, np.ndarray], prefix: str) -> Face | None:
    """The face stored under `prefix`, or None when none was found."""
    if f"{prefix}.box" not in rec:
        return None
    return Face(np.asarray(rec[f"{prefix}.box"], float), np.asarray(rec[f"{prefix}.lm"], float), 1.0)


_WORKER: Analyzer | None = None


def init_worker(
    method_name: str, cache_root: str, attacker_specs: tuple[str, ...] = (), motion_seed: int = 0, inhouse: str = ""
) -> None:
    """Pool initialiser: one thread per worker, models and attackers loaded once."""
    global _WORKER

    torch.set_num_threads(1)  # two workers on two cores: each one thread (torch is imported with the methods)
    method = get(method_name)
    attackers = tuple(build(spec, method) for spec in attacker_specs)
    _WORKER = Analyzer(method, cache_root, attackers, motion_seed, inhouse)


def run_task(task: Task) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Pool entry point."""
    assert _WORKER is not None, "init_worker was not called"
    return _WORKER.run(task)
