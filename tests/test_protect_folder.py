"""`protect` on a folder-per-identity set: the same layout out, a report, resume, and one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from workstation.commands import main


@pytest.fixture
def face_folder(tmp_path: Path) -> Path:
    """Two identities of two shifted crops of the scikit-image face each."""
    astronaut = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    for who, (y, x) in {"alice": (30, 125), "bob": (40, 115)}.items():
        for k in range(2):
            crop = cv2.resize(astronaut[y + 5 * k : y + 5 * k + 200, x : x + 200], (160, 160))
            (tmp_path / "data" / who).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(tmp_path / "data" / who / f"{k}.jpg"), crop)
    return tmp_path / "data"


def test_protect_writes_the_same_layout_with_a_report_and_resumes(
    face_folder: Path, tmp_path: Path, one_torch_thread: None
) -> None:
    out = tmp_path / "out"
    args = ["protect", "--method", "fgsm", "--data", str(face_folder), "--out", str(out), "--set", "epsilon=0.0157"]
    assert main(args) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("*/*.png")) == [
        "alice/0.png", "alice/1.png", "bob/0.png", "bob/1.png"
    ]  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 4 and report["linf_max"] == 4 and 30 < report["psnr_db_mean"] < 60
    assert report["options"]["epsilon"] == pytest.approx(0.0157) and (out / "examples.png").is_file()
    before = (out / "alice" / "0.png").read_bytes()
    assert main(args) == 0
    again = json.loads((out / "report.json").read_text())
    assert again["images_protected_this_run"] == 0 and (out / "alice" / "0.png").read_bytes() == before


def test_protect_refuses_in_one_line(face_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    (out / "alice").mkdir(parents=True)
    assert main(["protect", "--method", "deface-blur", "--data", str(face_folder), "--out", str(out)]) == 0
    capsys.readouterr()
    cases = {
        ("--method", "fgsm", "--out", str(out)): "holds images of another protection",
        ("--method", "pgd", "--set", "epsilon=-1", "--out", str(tmp_path / "o2")): "'epsilon' is -1",
        ("--method", "cloak", "--out", str(tmp_path / "o3")): "unknown protection",
    }
    for extra, expected in cases.items():
        assert main(["protect", "--data", str(face_folder), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1
    (face_folder / "bob" / "broken.jpg").write_bytes(b"not an image")
    assert main(["protect", "--method", "deface-blur", "--data", str(face_folder), "--out", str(out)]) == 2
    assert "broken.jpg: cannot decode image" in capsys.readouterr().err
    assert np.array_equal(cv2.imread(str(out / "alice" / "0.png")).shape, (160, 160, 3))
