"""Bad input to every entry point: one line on stderr naming the value and what was expected, exit code 2.

Each row is (entry point, arguments, a fragment the line must hold). `{tmp}` is a folder holding
`afile` (a plain file), `psf.npy` (a valid 3 x 8 x 8 PSF), `img.png` and `imgs/` (one image).
"""

from __future__ import annotations

import os
import re

import cv2
import numpy as np
import pytest

import simulate
from calibration.__main__ import main as calibration_main
from deploy.__main__ import main as deploy_main
from firmware.__main__ import main as firmware_main

ENTRY_POINTS = {"simulate": simulate.main, "calibration": calibration_main, "firmware": firmware_main}
ENTRY_POINTS["deploy"] = deploy_main
LOG_OR_BAR = re.compile(r"^\d{4}-\d\d-\d\d |%\|")  # a firmware log line or a tqdm bar
SIM = "sim://{tmp}/imgs?psf={tmp}/psf.npy"
TOKEN = "token=abcdefghij"

CASES = [
    # Output folders that cannot take files.
    ("simulate", "psf --out {tmp}/afile", "output folder {tmp}/afile cannot be written"),
    ("simulate", "psf --out /proc/obscura", "output folder /proc/obscura cannot be written"),
    ("simulate", "capture {tmp}/img.png --out {tmp}/afile/sub", "output folder {tmp}/afile/sub cannot be written"),
    ("calibration", "synth --out /proc/obscura", "output folder /proc/obscura"),
    # Wrong kinds of file and out-of-range sizes.
    ("simulate", "psf --optic {tmp}/psf.npy --out {tmp}/o", "psf.npy is not an .npz file; expected a saved optic"),
    ("simulate", "export --optic {tmp}/psf.npy --out {tmp}/o", "expected a saved optic"),
    ("simulate", "tolerance --optic {tmp}/psf.npy --out {tmp}/o", "expected a saved optic"),
    ("simulate", "tolerance --judge-data {tmp}/afile --out {tmp}/o", "--judge-data {tmp}/afile: not a folder"),
    ("simulate", "tolerance --set judge.identities=1 --out {tmp}/o", "'judge.identities' is 1"),
    ("simulate", "--pupil-samples 8 --out {tmp}/o", "pupil_samples is 8"),
    ("calibration", "fit --optic {tmp}/psf.npy --measured {tmp} --out {tmp}/o", "cannot be read"),
    ("simulate", "capture {tmp}/img.png --max-side -1 --out {tmp}/o", "--max-side is -1; expected an integer >= 1"),
    ("simulate", "capture {tmp}/img.png --max-side 0 --out {tmp}/o", "--max-side is 0; expected an integer >= 1"),
    ("simulate", "psf --size 100000000 --out {tmp}/o", "psf_size 100000000"),
    ("simulate", "psf --pupil-samples 100000000 --out {tmp}/o", "pupil_samples 100000000"),
    ("simulate", "psf --object-distance nan --out {tmp}/o", "object_distance_m is nan"),
    ("simulate", "psf --set optic.psf_size=big --out {tmp}/o", "'optic.psf_size' is 'big'"),
    ("simulate", "capture {tmp}/img.png --bit-depth 0 --out {tmp}/o", "bit_depth is 0"),
    ("calibration", "synth --set noise.signal_e=nan --out {tmp}/o", "'noise.signal_e' is nan"),
    ("calibration", "synth --set noise.frames=0 --out {tmp}/o", "'noise.frames' is 0"),
    ("calibration", "fit --optic lens --measured {tmp} --set steps=-1 --out {tmp}/o", "'steps' is -1"),
    # The device: options, URIs and sinks.
    ("firmware", f"run --source {SIM} --sink http://127.0.0.1:99999/?{TOKEN}", "port 0..65535"),
    ("firmware", f"run --source {SIM} --sink http://127.0.0.1:8080/?{TOKEN}&quality=nan", "quality='nan'"),
    ("firmware", f"run --source {SIM}&fps=nan --sink file://{{tmp}}/o", "fps='nan'; expected a finite number >= 0"),
    ("firmware", f"run --source {SIM}&fps=-2 --sink file://{{tmp}}/o", "fps='-2'; expected a finite number >= 0"),
    ("firmware", f"run --source {SIM} --sink file://{{tmp}}/o --log-level LOUD", "--log-level 'LOUD': expected"),
    ("firmware", f"run --source {SIM} --sink file://{{tmp}}/o --stall-timeout -1", "--stall-timeout -1.0: expected"),
    ("firmware", f"run --source {SIM} --sink file://{{tmp}}/o --duration -5", "--duration -5.0: expected"),
    ("firmware", f"run --source {SIM} --sink file://{{tmp}}/o --duration nan", "--duration nan: expected"),
    ("firmware", f"run --source {SIM} --sink file://{{tmp}}/o --queue-size 0", "--queue-size 0: expected"),
    ("firmware", f"run --source {SIM} --sink file:///proc/obscura.mp4", "output folder /proc cannot be written"),
    ("firmware", f"run --source {SIM} --sink file://{{tmp}}/afile/v.mp4", "afile cannot be written"),
    ("firmware", "run --source bogus://x --sink file://{tmp}/o", "source URI 'bogus://x': expected one of"),
    ("deploy", "flash --target host:/ --public-key {tmp}/k.pub --dry-run {tmp}/imgs", "--target 'host:/': expected"),
    (
        "deploy",
        "flash --target host:/opt/x --port 99999 --public-key {tmp}/k.pub --dry-run {tmp}/imgs",
        "--port 99999: expected",
    ),
]


@pytest.fixture
def inputs(tmp_path):
    """The files the table's commands refer to."""
    (tmp_path / "afile").write_text("a file, not a folder")
    np.save(tmp_path / "psf.npy", np.full((3, 8, 8), 1 / 64))
    image = np.random.default_rng(0).integers(0, 255, (24, 24, 3), dtype=np.uint8)
    (tmp_path / "imgs").mkdir()
    for path in (tmp_path / "img.png", tmp_path / "imgs" / "img.png"):
        cv2.imwrite(str(path), image)
    return tmp_path


@pytest.mark.parametrize(
    "entry, args, fragment", CASES, ids=[f"{e} {a.split(' --')[0]}-{i}" for i, (e, a, _) in enumerate(CASES)]
)
def test_bad_input_is_one_line_and_exit_2(entry, args, fragment, inputs, capsys):
    code = ENTRY_POINTS[entry](args.format(tmp=inputs).split())
    err = capsys.readouterr().err
    # Log lines and progress bars aside, the error is one line.
    lines = [line for line in err.splitlines() if line.strip() and not LOG_OR_BAR.search(line)]
    assert code == 2, err
    assert len(lines) == 1 and fragment.format(tmp=inputs) in lines[0], err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_one_line_and_exit_2(inputs, capsys):
    folder = inputs / "ro"
    folder.mkdir(mode=0o555)
    assert simulate.main(["psf", "--out", str(folder / "x")]) == 2
    assert "cannot be written" in capsys.readouterr().err
