"""Flashing a bundle to a device over SSH, and rolling back.

flash: verify the bundle here, its Ed25519 signature by the given public key included (an
unsigned or wrongly signed bundle is refused before anything is sent) -> make sure the device
trusts that key (ROOT/trusted-key.pub: installed at the first flash, and a flash with another key
is refused after that) -> copy the bundle (scp) into a staging folder on the device -> verify every
sha256 there -> move it into releases/VERSION and switch the `current` symlink atomically (the old
one becomes `previous`) -> install the systemd unit (whose firmware checks the signature against
the device's key at every start) -> restart. A transfer that fails or is cut off never touches
`current`, so the running version stays intact. Uses the system ssh and scp clients.

A flash or rollback holds a lock on the device (ROOT/.flash-lock) from first step to last, so two
workstations cannot interleave their steps on one device. The holder is `host:pid:start`; a lock
left by a process of this machine that no longer runs (a flash killed mid-copy) is taken over,
one from another machine only with `--break-lock`.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from firmware.bundle_reader import MANIFEST, SIGNATURE, verify_bundle
from obscura import signing
from obscura.digest import file_sha256
from obscura.errors import ObscuraError

REMOTE_SCRIPT = Path(__file__).with_name("remote.sh")
UNIT_TEMPLATE = Path(__file__).resolve().parents[1] / "firmware" / "systemd" / "obscura.service"
UNIT_NAME = "obscura.service"
TRUSTED_KEY = "trusted-key.pub"  # under the install folder, beside releases/, never inside a bundle
SAFE_PATH = re.compile(r"^[A-Za-z0-9._/+-]+$")
TIMEOUT_S = 600
HELD_BY = "held by: "  # remote.sh's `lock` names the holder after this


class FlashError(ObscuraError):
    """A flash or rollback step failed; the message says which and what state the device is in."""


@dataclass(frozen=True)
class Target:
    """`[user@]host:/absolute/install/dir`."""

    destination: str
    root: str

    @classmethod
    def parse(cls, text: str) -> "Target":
        """Parse and check a target string."""
        dest, sep, root = text.partition(":")
        # The install folder is replaced wholesale on rollback: never the device's root.
        bad_root = not root.startswith("/") or not SAFE_PATH.match(root) or not root.strip("/")
        if not sep or not dest or bad_root or dest.startswith("-"):
            raise ObscuraError(
                f"--target {text!r}: expected [user@]host:/absolute/path below /, e.g. pi@camera.local:/opt/obscura"
            )
        return cls(dest, root.rstrip("/") or "/")


@dataclass
class Ssh:
    """How to reach the device: extra ssh options shared by ssh and scp."""

    target: Target
    port: int | None = None
    identity: str | None = None
    config: str | None = None
    options: list[str] = field(default_factory=list)

    def _common(self, port_flag: str) -> list[str]:
        """Options understood by both ssh and scp (scp spells the port -P)."""
        args = [
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=15",
            "-o",
            "ServerAliveInterval=10",
            "-o",
            "ServerAliveCountMax=3",
        ]
        if self.config:
            args += ["-F", self.config]
        if self.port:
            args += [port_flag, str(self.port)]
        if self.identity:
            args += ["-i", self.identity]
        for option in self.options:
            args += ["-o", option]
        return args

    def run_steps(self, calls: str, what: str) -> str:
        """Run remote.sh's functions (`calls`, shell text) on the device; returns their stdout."""
        script = REMOTE_SCRIPT.read_text(encoding="utf-8") + "\n" + calls + "\n"
        command = ["ssh", *self._common("-p"), self.target.destination, "sh -s"]
        result = _run(command, script, what)
        return result.stdout

    def copy_dir(self, local: Path, remote_path: str, what: str) -> None:
        """Copy a local folder to a path (that must not exist yet) on the device."""
        command = ["scp", "-q", "-r", *self._common("-P"), str(local), f"{self.target.destination}:{remote_path}"]
        _run(command, None, what)


def _run(command: list[str], stdin: str | None, what: str) -> subprocess.CompletedProcess:
    """Run an ssh/scp command; failure is a FlashError with the device's last message."""
    try:
        result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=TIMEOUT_S)
    except FileNotFoundError:
        raise FlashError(f"{what}: `{command[0]}` is not installed (Debian: openssh-client)") from None
    except subprocess.TimeoutExpired:
        raise FlashError(f"{what}: no answer within {TIMEOUT_S} s") from None
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise FlashError(f"{what} failed (exit {result.returncode}): {lines[-1] if lines else 'no message'}")
    return result


def render_unit(root: str, python: str) -> str:
    """The systemd unit for an install folder and a device Python interpreter."""
    return UNIT_TEMPLATE.read_text(encoding="utf-8").replace("@INSTALL_DIR@", root).replace("@PYTHON@", python)


def checksum_lines(bundle: Path, manifest: dict) -> str:
    """`sha256sum -c` input for every bundle file, the manifest and its signature included."""
    lines = [f"{entry['sha256']}  {rel}" for rel, entry in sorted(manifest["files"].items())]
    lines += [f"{file_sha256(bundle / name)}  {name}" for name in (MANIFEST, SIGNATURE)]
    for line in lines:
        if not SAFE_PATH.match(line.split("  ", 1)[1]):
            raise ObscuraError(f"bundle {bundle}: file name {line.split('  ', 1)[1]!r} is not safe to send to a device")
    return "\n".join(lines)


def lock_holder() -> str:
    """This process as a lock holder: host:pid:start time (seconds since the epoch)."""
    return f"{socket.gethostname()}:{os.getpid()}:{int(time.time())}"


def _gone_here(holder: str) -> bool:
    """True when the holder is a process of this machine that no longer runs."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, under another user
        return False
    return False


def take_lock(ssh: Ssh, holder: str, break_lock: bool = False, log=print) -> None:
    """Hold the device's flash lock, taking over one whose holder is gone (or any, with break_lock)."""
    root, what = shlex.quote(ssh.target.root), f"lock on {ssh.target.destination}"
    try:
        out = ssh.run_steps(f"lock {root} {shlex.quote(holder)}", what)
    except FlashError as err:
        held = str(err).rpartition(HELD_BY)[2] if HELD_BY in str(err) else None
        if held is None or not (break_lock or _gone_here(held)):
            hint = "; if it no longer runs, pass --break-lock" if held is not None else ""
            raise FlashError(f"{err}{hint}") from None
        out = ssh.run_steps(f"lock {root} {shlex.quote(holder)} {shlex.quote(held)}", what)
    for line in out.strip().splitlines():
        log(line)


def release_lock(ssh: Ssh, holder: str) -> None:
    """Best effort: release the lock if this holder still holds it (a later flash can take it over anyway)."""
    try:
        ssh.run_steps(f"unlock {shlex.quote(ssh.target.root)} {shlex.quote(holder)}", "unlock")
    except FlashError:
        pass


def flash(
    bundle: str | Path,
    ssh: Ssh,
    public_key: str | Path,
    dry_run: bool = False,
    unit_dir: str = "/etc/systemd/system",
    python: str = "/usr/bin/python3",
    restart_cmd: str | None = None,
    log=print,
    break_lock: bool = False,
) -> str:
    """Install `bundle` on the device and make it current; returns the version. See the module docstring."""
    bundle = Path(bundle)
    manifest = verify_bundle(bundle, public_key)
    key_pem = signing.public_pem(signing.load_public_key(public_key)).decode("ascii")
    version = manifest["version"]
    root = ssh.target.root
    staging = f"{root}/releases/.staging-{version}-{secrets.token_hex(4)}"
    sums = checksum_lines(bundle, manifest)
    q = shlex.quote
    steps = [
        ("trust", f"trust {q(root)} {TRUSTED_KEY} <<'OBSCURA_KEY'\n{key_pem}OBSCURA_KEY"),
        ("prepare", f"prepare {q(root)} {q(staging)}"),
        ("copy", f"scp -r {bundle} {ssh.target.destination}:{staging}"),
        ("verify", f"verify {q(staging)} <<'OBSCURA_SUMS'\n{sums}\nOBSCURA_SUMS"),
        ("activate", f"activate {q(root)} {q(version)} {q(staging)}"),
        ("unit", f"install_unit {q(unit_dir)} {UNIT_NAME} <<'OBSCURA_UNIT'\n{render_unit(root, python)}OBSCURA_UNIT"),
        ("restart", f"restart {UNIT_NAME} {q(restart_cmd or '')}"),
    ]
    log(
        f"bundle {bundle}: version {version}, {len(manifest['files'])} files verified locally, "
        f"signed by key {signing.key_id(signing.load_public_key(public_key))}"
    )
    if dry_run:
        for name, text in steps:
            log(f"[dry run] {name}: {text.splitlines()[0]}")
        log(f"[dry run] nothing was sent to {ssh.target.destination}")
        return version
    holder = lock_holder()
    take_lock(ssh, holder, break_lock, log)
    try:
        for name, text in steps:
            try:
                if name == "copy":
                    ssh.copy_dir(bundle, staging, f"copy to {ssh.target.destination}:{staging}")
                    out = f"copied {bundle} -> {staging}"
                else:
                    out = ssh.run_steps(f"owns {q(root)} {q(holder)}\n{text}", f"{name} on {ssh.target.destination}")
            except FlashError as err:
                if name in ("copy", "verify"):
                    _cleanup(ssh, staging)
                    raise FlashError(f"{err}; the running version is untouched") from None
                raise
            for line in out.strip().splitlines():
                log(line)
    finally:
        release_lock(ssh, holder)
    return version


def _cleanup(ssh: Ssh, staging: str) -> None:
    """Best effort: remove a rejected transfer (the next flash removes it anyway)."""
    try:
        ssh.run_steps(f"rm -rf {shlex.quote(staging)}", "cleanup")
    except FlashError:
        pass


def rollback(ssh: Ssh, restart_cmd: str | None = None, log=print, break_lock: bool = False) -> None:
    """Make the previous version current again (and the current one previous), then restart."""
    q = shlex.quote
    holder = lock_holder()
    take_lock(ssh, holder, break_lock, log)
    try:
        out = ssh.run_steps(
            f"rollback {q(ssh.target.root)}\nrestart {UNIT_NAME} {q(restart_cmd or '')}",
            f"rollback on {ssh.target.destination}",
        )
    finally:
        release_lock(ssh, holder)
    for line in out.strip().splitlines():
        log(line)


def ssh_from_args(
    target: str, port: int | None, identity: str | None, config: str | None, options: Sequence[str]
) -> Ssh:
    """An Ssh from command-line values."""
    if port is not None and not 1 <= port <= 65535:
        raise ObscuraError(f"--port {port}: expected an ssh port 1..65535")
    return Ssh(Target.parse(target), port, identity, config, list(options))
