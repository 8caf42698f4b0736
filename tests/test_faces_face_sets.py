"""Folder-per-identity loading: order, filters, formats, splits and bad input."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from faces import face_sets
from obscura.errors import ObscuraError


def _write(path: Path, grey: bool = True, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = (
        np.full((20, 24), value, np.uint8)
        if grey
        else np.dstack([np.full((20, 24), v, np.uint8) for v in (10, 20, 30)])
    )
    assert cv2.imwrite(str(path), img)


@pytest.fixture()
def face_dir(tmp_path: Path) -> Path:
    root = tmp_path / "faces"
    for name, count in (("bob", 3), ("alice", 4), ("carol", 1)):
        for i in range(count):
            _write(root / name / f"{name}_{count - i:04d}.jpg")
    _write(root / "alice" / "alice_0009.png", grey=False)
    _write(root / "alice" / "alice_0010.pgm")
    (root / "alice" / "notes.txt").write_text("not an image")
    (root / "bob" / "bob_0000.jpg").write_bytes(b"broken jpeg")
    return root


def test_listing_is_sorted_and_filters_suffixes(face_dir: Path) -> None:
    listing = face_sets.list_images(face_dir)
    assert list(listing) == ["alice", "bob", "carol"]
    assert [p.name for p in listing["alice"]] == [
        "alice_0001.jpg",
        "alice_0002.jpg",
        "alice_0003.jpg",
        "alice_0004.jpg",
        "alice_0009.png",
        "alice_0010.pgm",
    ]


def test_load_skips_unreadable_and_applies_min_images(face_dir: Path) -> None:
    fs = face_sets.load_face_set(face_dir, min_images=3)
    assert fs.identities == ["alice", "bob"]  # carol has 1 image
    assert [img.path.name for img in fs.images["bob"]] == ["bob_0001.jpg", "bob_0002.jpg", "bob_0003.jpg"]
    assert fs.unreadable == [str(face_dir / "bob" / "bob_0000.jpg")]
    assert fs.n_images == 9 and fs.grey_images == 8  # the PNG is colour


def test_max_images_keeps_each_identitys_first_images_by_name(face_dir: Path) -> None:
    fs = face_sets.load_face_set(face_dir, min_images=2, max_images=3)
    assert [img.path.name for img in fs.images["alice"]] == ["alice_0001.jpg", "alice_0002.jpg", "alice_0003.jpg"]
    # bob's first three files are the broken one and two images; the cap counts files, not readable images
    assert [img.path.name for img in fs.images["bob"]] == ["bob_0001.jpg", "bob_0002.jpg"]
    assert fs.n_images == 5 and fs.unreadable == [str(face_dir / "bob" / "bob_0000.jpg")]


def test_unreadable_images_count_against_min_images(face_dir: Path) -> None:
    # bob has 4 files but only 3 decode, so min_images=4 leaves alice alone: an error
    with pytest.raises(ObscuraError, match="1 identity with >= 4 readable images"):
        face_sets.load_face_set(face_dir, min_images=4)


def test_grey_is_replicated_to_rgb(face_dir: Path) -> None:
    rgb, grey = face_sets.read_rgb(face_dir / "alice" / "alice_0010.pgm")
    assert grey and rgb.shape == (20, 24, 3) and (rgb[..., 0] == rgb[..., 2]).all()
    rgb, grey = face_sets.read_rgb(face_dir / "alice" / "alice_0009.png")
    assert not grey and rgb[0, 0].tolist() == [30, 20, 10]  # written BGR (10, 20, 30), read back as RGB


def test_unreadable_image_error_names_file(face_dir: Path) -> None:
    with pytest.raises(ObscuraError, match="bob_0000.jpg: cannot decode"):
        face_sets.read_rgb(face_dir / "bob" / "bob_0000.jpg")


def test_empty_and_missing_folders_are_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ObscuraError, match="no identity folders"):
        face_sets.load_face_set(tmp_path / "empty")
    with pytest.raises(ObscuraError, match="not a folder"):
        face_sets.load_face_set(tmp_path / "absent")


def test_single_identity_is_an_error(tmp_path: Path) -> None:
    for i in range(3):
        _write(tmp_path / "solo" / "only" / f"{i}.jpg")
    with pytest.raises(ObscuraError, match="needs at least 2"):
        face_sets.load_face_set(tmp_path / "solo", min_images=2)


def test_min_images_below_two_is_an_error(face_dir: Path) -> None:
    with pytest.raises(ObscuraError, match="--min-images 1"):
        face_sets.load_face_set(face_dir, min_images=1)


def test_split_file_restricts_identities(face_dir: Path, tmp_path: Path) -> None:
    split = tmp_path / "test.txt"
    split.write_text("# test identities\nbob\nalice\n")
    assert face_sets.read_split(split) == ["bob", "alice"]
    fs = face_sets.load_face_set(face_dir, min_images=3, identities=face_sets.read_split(split))
    assert fs.identities == ["alice", "bob"]
    split.write_text("bob\ndave\n")
    with pytest.raises(ObscuraError, match="identity 'dave'"):
        face_sets.load_face_set(face_dir, min_images=3, identities=face_sets.read_split(split))


def test_identity_splits_are_disjoint_deterministic_and_written(tmp_path: Path) -> None:
    names = [f"id{i:03d}" for i in range(100)]
    parts = face_sets.split_identities(names, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=5)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [70, 10, 20]
    assert sorted(parts["train"] + parts["val"] + parts["test"]) == names
    assert parts == face_sets.split_identities(list(reversed(names)), {"train": 0.7, "val": 0.1, "test": 0.2}, seed=5)
    assert parts != face_sets.split_identities(names, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=6)
    paths = face_sets.write_splits(parts, tmp_path / "splits")
    assert face_sets.read_split(paths["test"]) == parts["test"]
    with pytest.raises(ObscuraError, match="sum to 1"):
        face_sets.split_identities(names, {"train": 0.7, "test": 0.2})
