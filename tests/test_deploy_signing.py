"""Signed bundles: only the holder of the private key can make code and models a device accepts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.__main__ import main as deploy_main
from deploy.bundle_builder import sign_bundle, write_manifest
from deploy.flash import Ssh, Target, flash
from deploy.standins import build_standin_bundle
from firmware.__main__ import main as firmware_main
from firmware.bundle_reader import SIGNATURE, BundleError, check_bundle, verify_bundle
from obscura import signing
from obscura.errors import ObscuraError

DEVICE = Ssh(Target.parse("pi@camera.local:/opt/obscura"))  # dry runs only: nothing is sent


@pytest.fixture()
def keys(tmp_path: Path) -> dict[str, Path]:
    """Two key pairs: the operator's ('key', 'pub') and someone else's ('other_key', 'other_pub')."""
    signing.generate_keypair(tmp_path / "k.key", tmp_path / "k.pub")
    signing.generate_keypair(tmp_path / "o.key", tmp_path / "o.pub")
    return {
        "key": tmp_path / "k.key",
        "pub": tmp_path / "k.pub",
        "other_key": tmp_path / "o.key",
        "other_pub": tmp_path / "o.pub",
    }


@pytest.fixture()
def signed(tmp_path: Path, keys: dict[str, Path]) -> Path:
    build_standin_bundle(tmp_path / "b", 16, version="v1", signing_key=keys["key"])
    return tmp_path / "b"


def test_a_signed_bundle_verifies_with_its_key_and_flashes(signed: Path, keys: dict[str, Path]) -> None:
    assert verify_bundle(signed, keys["pub"])["version"] == "v1"
    record = json.loads((signed / SIGNATURE).read_text())
    assert record["key_id"] == signing.key_id(signing.load_public_key(keys["pub"]))
    logs: list[str] = []
    assert flash(signed, DEVICE, keys["pub"], dry_run=True, log=logs.append) == "v1"
    assert any("signed by key" in line for line in logs)


def test_edited_code_with_a_recomputed_manifest_is_refused(
    signed: Path, keys: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    code = signed / "code" / "firmware" / "pipeline.py"
    code.write_text(code.read_text() + "\nEXFILTRATE = True\n")
    write_manifest(signed, "v1")  # the checksums match again: they alone cannot tell
    verify_bundle(signed)
    with pytest.raises(BundleError, match="signature does not match trusted key"):
        verify_bundle(signed, keys["pub"])
    with pytest.raises(BundleError, match="signature does not match trusted key"):
        flash(signed, DEVICE, keys["pub"], dry_run=True, log=lambda line: None)
    assert firmware_main(["run", "--bundle", str(signed), "--public-key", str(keys["pub"])]) == 2
    assert "signature does not match trusted key" in capsys.readouterr().err
    source, sink = f"sim://{signed}?psf=x.npy", "file:///tmp/never"
    assert firmware_main(["run", "--source", source, "--sink", sink, "--public-key", str(keys["pub"])]) == 2
    assert "give the --bundle it must have signed" in capsys.readouterr().err


def test_unsigned_or_otherwise_signed_bundles_are_refused(tmp_path: Path, keys: dict[str, Path]) -> None:
    build_standin_bundle(tmp_path / "unsigned", 16, version="u1")
    with pytest.raises(BundleError, match="not signed"):
        flash(tmp_path / "unsigned", DEVICE, keys["pub"], dry_run=True)
    build_standin_bundle(tmp_path / "theirs", 16, signing_key=keys["other_key"])
    with pytest.raises(BundleError, match="signature does not match"):
        flash(tmp_path / "theirs", DEVICE, keys["pub"], dry_run=True)
    (tmp_path / "unsigned" / SIGNATURE).write_text((tmp_path / "theirs" / SIGNATURE).read_text())  # a copied one
    with pytest.raises(BundleError, match="signature does not match"):
        verify_bundle(tmp_path / "unsigned", keys["other_pub"])
    assert sign_bundle(tmp_path / "theirs", keys["key"]) == signing.key_id(signing.load_public_key(keys["pub"]))
    verify_bundle(tmp_path / "theirs", keys["pub"])  # re-signed by the operator: accepted


def test_checksums_alone_report_corruption_and_say_they_are_not_a_signature_check(signed: Path) -> None:
    model = signed / "models" / "regressor.onnx"
    summary = check_bundle(signed)
    assert "signature: not checked" in summary and "corruption, not deliberate changes" in summary
    data = bytearray(model.read_bytes())
    data[-1] ^= 1
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"does not match its sha256 in the manifest \(corrupted\)"):
        verify_bundle(signed)


def test_key_files_are_refused_clearly(tmp_path: Path, keys: dict[str, Path]) -> None:
    with pytest.raises(ObscuraError, match="already exists"):
        signing.generate_keypair(keys["key"], tmp_path / "new.pub")
    with pytest.raises(ObscuraError, match="not an unencrypted PEM private key"):
        signing.load_private_key(keys["pub"])
    with pytest.raises(ObscuraError, match="not a PEM public key"):
        signing.load_public_key(keys["key"])
    with pytest.raises(ObscuraError, match="cannot read"):
        build_standin_bundle(tmp_path / "x", 16, signing_key=tmp_path / "missing.key")
    assert not (tmp_path / "x").exists()


def test_cli_keygen_sign_and_verify(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert deploy_main(["keygen", str(tmp_path / "op")]) == 0
    assert deploy_main(["keygen", str(tmp_path / "op")]) == 2 and "already exists" in capsys.readouterr().err
    build_standin_bundle(tmp_path / "b", 16)
    assert deploy_main(["verify", str(tmp_path / "b"), "--public-key", str(tmp_path / "op.pub")]) == 2
    assert "not signed" in capsys.readouterr().err
    assert deploy_main(["sign", str(tmp_path / "b"), "--key", str(tmp_path / "op.key")]) == 0
    assert deploy_main(["verify", str(tmp_path / "b"), "--public-key", str(tmp_path / "op.pub")]) == 0
    assert "signature: valid" in capsys.readouterr().out
