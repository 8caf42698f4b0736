"""The versioned bundle: every file hashed in the manifest; tampered or partial bundles refused by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deploy.__main__ import main as deploy_main
from deploy.bundle_builder import build_bundle
from deploy.standins import build_standin_bundle, write_standins
from firmware.bundle_reader import (
    BundleConfig,
    BundleError,
    load_config,
    verify_bundle,
)
from obscura.digest import file_sha256
from obscura.errors import ObscuraError
from obscura.paths import REPO_ROOT


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    np.save(tmp_path / "psf.npy", np.ones((3, 4, 4), np.float32) / 16)
    build_standin_bundle(tmp_path / "bundle", 16, psf=tmp_path / "psf.npy", version="2026.1-test")
    return tmp_path / "bundle"


def test_manifest_lists_every_file_with_its_sha256(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    files = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == files
    assert {
        "config.yaml",
        "models/regressor.onnx",
        "models/anonymizer.onnx",
        "psf.npy",
        "constants/style.npy",
        "code/firmware/pipeline.py",
        "code/obscura/errors.py",
    } <= files
    for rel, entry in manifest["files"].items():
        assert entry["sha256"] == file_sha256(bundle / rel) and entry["bytes"] == (bundle / rel).stat().st_size
    assert manifest["version"] == "2026.1-test" and manifest["format"] == "obscura-bundle/1"
    cfg = load_config(bundle)
    assert cfg.stand_in and cfg.psf == "psf.npy" and cfg.constants == {"style": "constants/style.npy"}
    assert not any("__pycache__" in f for f in files)


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: _flip_byte(b / "models" / "regressor.onnx"), "file models/regressor.onnx does not match its sha256"),
        (lambda b: (b / "psf.npy").unlink(), "missing file psf.npy"),
        (lambda b: (b / "models" / "extra.onnx").write_bytes(b"x"), "file models/extra.onnx is not listed"),
        (lambda b: (b / "manifest.json").unlink(), "missing manifest.json"),
        (lambda b: (b / "config.yaml").write_text("input_size: 512\n"), "file config.yaml has"),
        (lambda b: os.symlink("/etc/passwd", b / "link"), "link is a symbolic link"),
        (lambda b: (b / "manifest.json").write_text("{"), "not JSON"),
    ],
)
def test_tampered_or_partial_bundles_are_refused_with_one_line_naming_the_file(
    bundle: Path, damage, message: str
) -> None:
    damage(bundle)
    with pytest.raises(BundleError, match=message) as info:
        verify_bundle(bundle)
    assert "\n" not in str(info.value) and str(bundle) in str(info.value)


def test_a_manifest_rewritten_to_point_outside_the_bundle_is_refused(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["../escape"] = {"sha256": "0" * 64, "bytes": 1}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="unsafe path '../escape'"):
        verify_bundle(bundle)


def test_bundle_building_refuses_bad_input(tmp_path: Path) -> None:
    paths = write_standins(tmp_path / "m", 16)
    (tmp_path / "taken").mkdir()
    with pytest.raises(ObscuraError, match="already exists"):
        build_bundle(tmp_path / "taken", {"regressor": paths["regressor"]})
    with pytest.raises(ObscuraError, match="model role 'generator'"):
        build_bundle(tmp_path / "b1", {"generator": paths["regressor"]})
    with pytest.raises(ObscuraError, match="not a valid ONNX file"):
        build_bundle(tmp_path / "b2", {"regressor": paths["style"]})
    with pytest.raises(ObscuraError, match="bundle version 'a b'"):
        build_bundle(tmp_path / "b3", {"regressor": paths["regressor"]}, BundleConfig(input_size=16), version="a b")
    assert not (tmp_path / "b2").exists() and not (tmp_path / "b3").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no half bundles left behind


def test_cli_bundle_verify_and_dry_run_flash(tmp_path: Path) -> None:
    def deploy(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "deploy", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
        )

    keys = deploy("keygen", str(tmp_path / "keys" / "signer"))
    assert keys.returncode == 0 and "keep it off the device" in keys.stdout, keys.stderr
    key, pub = str(tmp_path / "keys" / "signer.key"), str(tmp_path / "keys" / "signer.pub")
    assert (tmp_path / "keys" / "signer.key").stat().st_mode & 0o077 == 0  # the private key is the owner's only
    paths = write_standins(tmp_path / "m", 16)
    made = deploy(
        "bundle",
        str(tmp_path / "b"),
        "--regressor",
        str(paths["regressor"]),
        "--anonymizer",
        str(paths["anonymizer"]),
        "--constant",
        f"style={paths['style']}",
        "--set",
        "input_size=16",
        "--version",
        "v7",
        "--key",
        key,
    )
    assert made.returncode == 0, made.stderr
    checked = deploy("verify", str(tmp_path / "b"), "--public-key", pub)
    assert checked.returncode == 0 and "version v7" in checked.stdout and "trained models" in checked.stdout
    assert "signature: valid, by trusted key" in checked.stdout and "de-identifies the output stream" in checked.stdout
    standin = deploy("bundle", str(tmp_path / "s"), "--standin", "32")
    assert standin.returncode == 0 and "stand-in models" in deploy("verify", str(tmp_path / "s")).stdout
    dry = deploy(
        "flash", str(tmp_path / "b"), "--target", "pi@camera.local:/opt/obscura", "--public-key", pub, "--dry-run"
    )
    assert dry.returncode == 0 and "nothing was sent to pi@camera.local" in dry.stdout
    bad = deploy("flash", str(tmp_path / "b"), "--target", "camera.local", "--public-key", pub, "--dry-run")
    assert bad.returncode == 2 and bad.stderr.strip().startswith("deploy: error: --target 'camera.local'")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "bogus=1"], "bogus"),
        (["--set", "input_size=big"], "config key 'input_size' is 'big'; expected int"),
        (["--set", "threads=0"], "config key 'threads'"),
    ],
)
def test_standin_bundles_validate_their_config_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    assert deploy_main(["bundle", str(tmp_path / "s"), "--standin", "32", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deploy: error:") and message in err[0]
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("size", ["-3", "0", "30"])
def test_standin_sizes_that_cannot_work_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture, size: str) -> None:
    assert deploy_main(["bundle", str(tmp_path / "s"), "--standin", size]) == 2
    assert f"--standin {size}: expected an input size that is a positive multiple of 4" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_standin_bundles_honour_config_files_and_overrides(tmp_path: Path) -> None:
    config = tmp_path / "bundle.yaml"
    config.write_text("name: hall-camera\nsource: v4l2:///dev/video2\nthreads: 2\n")
    assert (
        deploy_main(["bundle", str(tmp_path / "s"), "--standin", "32", "--config", str(config), "--set", "threads=3"])
        == 0
    )
    cfg = load_config(tmp_path / "s")
    assert (cfg.name, cfg.source, cfg.threads, cfg.input_size, cfg.stand_in) == (
        "hall-camera",
        "v4l2:///dev/video2",
        3,
        32,
        True,
    )
    assert deploy_main(["bundle", str(tmp_path / "t"), "--standin", "32", "--set", "input_size=64"]) == 2
