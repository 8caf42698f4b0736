"""Flashing over SSH against a real sshd on 127.0.0.1 started by the tests (Debian: openssh-server).

The "device" is a folder on this machine reached through ssh/scp as the current user; restarting
the service is a command that leaves a marker file, so no systemd unit is touched here.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.flash import FlashError, Ssh, Target, flash, lock_holder, rollback, take_lock
from deploy.standins import build_standin_bundle
from firmware.bundle_reader import verify_bundle
from obscura import signing
from obscura.errors import ObscuraError
from obscura.paths import REPO_ROOT

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
SFTP_SERVER = next(
    (
        p
        for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/libexec/sftp-server")
        if Path(p).exists()
    ),
    None,
)
pytestmark = pytest.mark.skipif(
    SSHD is None or SFTP_SERVER is None or shutil.which("ssh-keygen") is None,
    reason="sshd not installed (Debian package: openssh-server)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ssh_ok(config: Path) -> bool:
    result = subprocess.run(["ssh", "-F", str(config), "device", "true"], capture_output=True, timeout=30)
    return result.returncode == 0


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory):
    """An sshd on 127.0.0.1:<free port> with fresh host and user keys; yields the client config file."""
    home = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / name)], check=True)
    (home / "authorized_keys").write_text((home / "user_key.pub").read_text())
    os.chmod(home / "authorized_keys", 0o600)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation folder
    elif not Path("/run/sshd").is_dir():
        pytest.skip("sshd needs /run/sshd, which only root can create here")
    port = _free_port()
    user = getpass.getuser()
    (home / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {home / 'host_key'}\nPidFile {home / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {home / 'authorized_keys'}\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n"
        f"AllowUsers {user}\nSubsystem sftp {SFTP_SERVER}\nLogLevel ERROR\n"
    )
    host_pub = (home / "host_key.pub").read_text().split()
    (home / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    config = home / "ssh_config"
    config.write_text(
        f"Host device\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n  IdentityFile {home / 'user_key'}\n"
        f"  IdentitiesOnly yes\n  UserKnownHostsFile {home / 'known_hosts'}\n  StrictHostKeyChecking yes\n"
        "  BatchMode yes\n  LogLevel ERROR\n"
    )
    server = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(home / "sshd_config")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not _ssh_ok(config):
            if server.poll() is not None:
                pytest.fail(f"sshd exited: {server.stderr.read()[-1000:]}")
            if time.monotonic() > deadline:
                pytest.fail("sshd did not accept a login within 30 s")
            time.sleep(0.2)
        yield config
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture()
def bundles(tmp_path: Path) -> tuple[Path, Path]:
    """Two bundles signed by tmp_path/signer.key; flashes check them with tmp_path/signer.pub (see `_pub`)."""
    signing.generate_keypair(tmp_path / "signer.key", tmp_path / "signer.pub")
    build_standin_bundle(tmp_path / "v1", 16, version="v1", signing_key=tmp_path / "signer.key")
    build_standin_bundle(tmp_path / "v2", 32, version="v2", signing_key=tmp_path / "signer.key")
    return tmp_path / "v1", tmp_path / "v2"


def _pub(bundle: Path) -> Path:
    """The public key the `bundles` fixture signed with."""
    return bundle.parent / "signer.pub"


def _ssh(device: Path, root: Path) -> Ssh:
    return Ssh(Target.parse(f"device:{root}"), config=str(device))


def _flash_cli(device: Path, bundle: Path, root: Path, *extra: str, path_prefix: Path | None = None):
    env = dict(os.environ)
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}{os.pathsep}{env['PATH']}"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "deploy",
            "flash",
            str(bundle),
            "--target",
            f"device:{root}",
            "-F",
            str(device),
            "--unit-dir",
            str(root.parents[1] / "units"),
            "--restart-cmd",
            f"echo restarted >> {root.parents[1] / 'restarts'}",
            *(extra if "--public-key" in extra else ("--public-key", str(_pub(bundle)), *extra)),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _current(root: Path) -> str:
    return os.readlink(root / "current")


def test_flash_installs_verifies_switches_and_rolls_back(device: Path, bundles, tmp_path: Path) -> None:
    v1, v2 = bundles
    root = tmp_path / "device" / "opt" / "obscura"
    result = _flash_cli(device, v1, root)
    assert result.returncode == 0, result.stderr
    assert "flashed version v1" in result.stdout and "verified" in result.stdout
    assert _current(root) == "releases/v1" and not (root / "previous").exists()
    verify_bundle(root / "current")  # the device copy is complete and unaltered
    unit = (tmp_path / "device" / "units" / "obscura.service").read_text()
    assert f"ExecStart=/usr/bin/python3 -m firmware run --bundle {root}/current" in unit and "@" not in unit
    assert f"--public-key {root}/trusted-key.pub" in unit
    assert (root / "trusted-key.pub").read_bytes() == _pub(v1).read_bytes()  # the device now holds the key
    assert (tmp_path / "device" / "restarts").read_text().count("restarted") == 1
    with pytest.raises(FlashError, match="no previous version under .* to roll back to"):
        rollback(_ssh(device, root), restart_cmd="true", log=lambda line: None)
    assert _current(root) == "releases/v1"

    assert _flash_cli(device, v2, root).returncode == 0
    assert _current(root) == "releases/v2" and os.readlink(root / "previous") == "releases/v1"
    verify_bundle(root / "current")

    logs: list[str] = []
    rollback(_ssh(device, root), restart_cmd=f"echo restarted >> {tmp_path / 'device' / 'restarts'}", log=logs.append)
    assert _current(root) == "releases/v1" and os.readlink(root / "previous") == "releases/v2"
    assert (tmp_path / "device" / "restarts").read_text().count("restarted") == 3

    build_standin_bundle(tmp_path / "v3", 16, version="v3", signing_key=tmp_path / "signer.key")
    flash(
        tmp_path / "v3",
        _ssh(device, root),
        _pub(v1),
        unit_dir=str(tmp_path / "device" / "units"),
        restart_cmd="true",
        log=logs.append,
    )
    assert sorted(p.name for p in (root / "releases").iterdir()) == ["v1", "v3"]  # v2 pruned: not current/previous


def test_dry_run_sends_nothing(device: Path, bundles, tmp_path: Path) -> None:
    root = tmp_path / "device" / "opt" / "obscura"
    result = _flash_cli(device, bundles[0], root, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "[dry run] copy: scp -r" in result.stdout and "nothing was sent" in result.stdout
    assert not (tmp_path / "device").exists()


def test_without_systemd_the_restart_is_skipped_and_said(device: Path, bundles, tmp_path: Path) -> None:
    if Path("/run/systemd/system").is_dir():
        pytest.skip("systemd runs here; the test must not restart a real service")
    root = tmp_path / "device" / "opt" / "obscura"
    logs: list[str] = []
    flash(bundles[0], _ssh(device, root), _pub(bundles[0]), unit_dir=str(tmp_path / "units"), log=logs.append)
    assert any(line.startswith("skipped restart: systemd is not running") for line in logs)


def _write_scp_wrapper(folder: Path, behaviour: str) -> Path:
    """An `scp` first on PATH that misbehaves like a cut link, then (maybe) hands over to the real scp."""
    folder.mkdir()
    real = shutil.which("scp")
    wrapper = folder / "scp"
    wrapper.write_text(f"""#!{sys.executable}
import os, shutil, signal, subprocess, sys, tempfile
from pathlib import Path
args = sys.argv[1:]
src = Path(args[-2])
partial = Path(tempfile.mkdtemp()) / src.name
shutil.copytree(src, partial)
files = sorted(p for p in partial.rglob('*') if p.is_file())
behaviour = {behaviour!r}
if behaviour in ('cut', 'kill'):
    for p in files[len(files) // 2:]:
        p.unlink()           # the second half never arrived
    files[0].write_bytes(files[0].read_bytes()[: max(1, files[0].stat().st_size // 2)])  # one file half-sent
if behaviour == 'corrupt':
    victim = next(p for p in files if p.suffix == '.onnx')
    data = bytearray(victim.read_bytes()); data[len(data) // 2] ^= 1; victim.write_bytes(bytes(data))
code = subprocess.call([{real!r}, *args[:-2], str(partial), args[-1]])
if behaviour == 'kill':
    os.kill(os.getppid(), signal.SIGKILL)   # the flashing process dies mid-transfer
    sys.exit(137)
sys.exit(255 if behaviour == 'cut' else code)
""")
    wrapper.chmod(0o755)
    return folder


@pytest.mark.parametrize("behaviour", ["cut", "corrupt", "kill"])
def test_an_interrupted_or_corrupted_transfer_leaves_the_running_version_intact(
    device: Path, bundles, tmp_path: Path, behaviour: str
) -> None:
    v1, v2 = bundles
    root = tmp_path / "device" / "opt" / "obscura"
    assert _flash_cli(device, v1, root).returncode == 0
    restarts = (tmp_path / "device" / "restarts").read_text()

    result = _flash_cli(device, v2, root, path_prefix=_write_scp_wrapper(tmp_path / "bad-scp", behaviour))
    assert result.returncode != 0
    if behaviour == "cut":
        assert "copy to device:" in result.stderr and "running version is untouched" in result.stderr
    if behaviour == "corrupt":
        assert "checksums do not match" in result.stderr and "running version is untouched" in result.stderr
        assert not list((root / "releases").glob(".staging-*"))  # a rejected transfer is removed
    if behaviour == "kill":
        assert result.returncode == -9
    assert _current(root) == "releases/v1" and not (root / "previous").exists()
    verify_bundle(root / "current")
    assert (tmp_path / "device" / "restarts").read_text() == restarts  # nothing was restarted

    retry = _flash_cli(device, v2, root)  # the next attempt cleans up and succeeds
    assert retry.returncode == 0, retry.stderr
    assert _current(root) == "releases/v2" and not list((root / "releases").glob(".staging-*"))


def test_tampered_or_partial_bundles_are_refused_before_anything_is_sent(bundles, tmp_path: Path) -> None:
    v1, _ = bundles
    ssh = Ssh(Target.parse("device:/opt/obscura"))
    (v1 / "psf.npy").write_bytes(b"extra")
    with pytest.raises(ObscuraError, match="psf.npy is not listed in the manifest"):
        flash(v1, ssh, _pub(v1), dry_run=True)
    (v1 / "psf.npy").unlink()
    (v1 / "models" / "regressor.onnx").unlink()
    with pytest.raises(ObscuraError, match="missing file models/regressor.onnx"):
        flash(v1, ssh, _pub(v1), dry_run=True)
    with pytest.raises(ObscuraError, match="expected \\[user@\\]host:/absolute/path"):
        Target.parse("device:relative/dir")
    assert issubclass(FlashError, ObscuraError)


def test_a_flash_in_progress_elsewhere_holds_the_device_until_the_lock_is_broken(
    device: Path, bundles, tmp_path: Path
) -> None:
    v1, v2 = bundles
    root = tmp_path / "device" / "opt" / "obscura"
    assert _flash_cli(device, v1, root).returncode == 0
    (root / ".flash-lock").mkdir()
    (root / ".flash-lock" / "holder").write_text("workstation-b:4242:1700000000\n")  # another machine's flash
    refused = _flash_cli(device, v2, root)
    assert refused.returncode != 0
    assert "held by: workstation-b:4242:1700000000" in refused.stderr and "--break-lock" in refused.stderr
    assert _current(root) == "releases/v1" and not list((root / "releases").glob(".staging-*"))
    with pytest.raises(FlashError, match="held by: workstation-b"):
        rollback(_ssh(device, root), restart_cmd="true")
    (root / ".flash-lock" / "holder").write_text(f"{socket.gethostname()}:{os.getpid()}:1700000000\n")  # alive here
    assert _flash_cli(device, v2, root).returncode != 0
    broken = _flash_cli(device, v2, root, "--break-lock")
    assert broken.returncode == 0, broken.stderr
    assert "took over the lock" in broken.stdout
    assert _current(root) == "releases/v2" and not (root / ".flash-lock").exists()


def test_a_step_that_lost_the_lock_stops_before_touching_the_device(device: Path, bundles, tmp_path: Path) -> None:

    root = tmp_path / "device" / "opt" / "obscura"
    ssh = _ssh(device, root)
    take_lock(ssh, "workstation-b:1:1", log=lambda line: None)
    with pytest.raises(FlashError, match="lost the lock"):
        ssh.run_steps(f"owns {root} {lock_holder()}\nactivate {root} v9 {root}/releases/.staging-x", "activate")
    assert not (root / "current").exists()


def test_a_device_trusts_one_key_and_refuses_bundles_signed_by_another(device: Path, bundles, tmp_path: Path) -> None:
    v1, _ = bundles
    root = tmp_path / "device" / "opt" / "obscura"
    first = _flash_cli(device, v1, root)
    assert first.returncode == 0 and "device now trusts this signing key" in first.stdout, first.stderr
    signing.generate_keypair(tmp_path / "other.key", tmp_path / "other.pub")
    build_standin_bundle(tmp_path / "v9", 16, version="v9", signing_key=tmp_path / "other.key")
    refused = _flash_cli(device, tmp_path / "v9", root, "--public-key", str(tmp_path / "other.pub"))
    assert refused.returncode != 0 and "trusts another signing key" in refused.stderr
    assert _current(root) == "releases/v1" and not (root / "releases" / "v9").exists()
    assert (root / "trusted-key.pub").read_bytes() == _pub(v1).read_bytes()
