# Device-side steps of `python -m deploy flash` and `rollback`, run by `sh -s` over ssh.
# Needs only POSIX sh and GNU coreutils (sha256sum, readlink, `mv -T`, cmp). The layout under ROOT:
#   releases/VERSION/   one folder per bundle      current -> releases/VERSION   (what runs)
#   releases/.staging-* transfers in progress      previous -> releases/VERSION  (for rollback)
#   .flash-lock/holder  the flash or rollback now running (mkdir(2) takes the lock atomically)
#   trusted-key.pub     the public key every bundle must be signed by (the firmware checks it at start)
# `current` only ever changes by rename(2) of a new symlink over it, so it is always complete.
set -eu

fail() { echo "device: $*" >&2; exit 3; }

swap_link() {  # ROOT NAME TARGET: point ROOT/NAME at TARGET atomically
    ln -sfn "$3" "$1/.$2.new"
    mv -Tf "$1/.$2.new" "$1/$2"
}

lock() {  # ROOT HOLDER [STALE]: take the lock for HOLDER; one held by STALE (shown dead by the caller) is taken over
    mkdir -p "$1"
    if mkdir "$1/.flash-lock" 2>/dev/null; then
        printf '%s\n' "$2" > "$1/.flash-lock/holder"
        echo "locked $1"
        return
    fi
    held=$(cat "$1/.flash-lock/holder" 2>/dev/null || echo unknown)
    if [ -n "${3:-}" ] && [ "$held" = "$3" ]; then
        printf '%s\n' "$2" > "$1/.flash-lock/holder.new"
        mv -f "$1/.flash-lock/holder.new" "$1/.flash-lock/holder"
        echo "took over the lock of a flash that no longer runs ($held)"
        return
    fi
    fail "another flash or rollback holds $1/.flash-lock, held by: $held"
}

owns() {  # ROOT HOLDER: stop unless HOLDER still holds the lock
    [ "$(cat "$1/.flash-lock/holder" 2>/dev/null)" = "$2" ] || fail "lost the lock on $1 to another flash; stopped"
}

unlock() {  # ROOT HOLDER: release the lock if HOLDER holds it
    if [ "$(cat "$1/.flash-lock/holder" 2>/dev/null)" = "$2" ]; then rm -rf "$1/.flash-lock"; fi
}

trust() {  # ROOT NAME, key on stdin: install the trusted key at the first flash; refuse another key after that
    mkdir -p "$1"
    cat > "$1/.$2.new"
    if [ -f "$1/$2" ]; then
        if cmp -s "$1/.$2.new" "$1/$2"; then rm -f "$1/.$2.new"; echo "device trusts this signing key"; return; fi
        rm -f "$1/.$2.new"
        fail "this device trusts another signing key ($1/$2); refusing a bundle signed by a different key"
    fi
    mv -f "$1/.$2.new" "$1/$2"
    echo "device now trusts this signing key ($1/$2)"
}

prepare() {  # ROOT STAGING: clear stale transfers, report the running version
    mkdir -p "$1/releases"
    for stale in "$1"/releases/.staging-*; do
        if [ -e "$stale" ]; then rm -rf "$stale"; echo "removed stale transfer $stale"; fi
    done
    echo "current: $(readlink "$1/current" 2>/dev/null || echo none)"
}

verify() {  # STAGING, sums on stdin: every file of the bundle must match
    [ -d "$1" ] || fail "transfer folder $1 is missing"
    cd "$1"
    sha256sum -c --strict --quiet - >&2 \
        || fail "checksums do not match in $1 (interrupted or corrupted transfer)"
    echo "verified $1"
}

activate() {  # ROOT VERSION STAGING: move the verified transfer into place and switch `current`
    cur=$(readlink "$1/current" 2>/dev/null || true)
    if [ "$cur" = "releases/$2" ]; then
        rm -rf "$3"
        echo "version $2 is already current"
        return
    fi
    rm -rf "$1/releases/$2"
    mv -T "$3" "$1/releases/$2"
    swap_link "$1" current "releases/$2"
    if [ -n "$cur" ]; then swap_link "$1" previous "$cur"; fi
    echo "current: releases/$2 (previous: ${cur:-none})"
    prune "$1"
}

prune() {  # ROOT: keep only the current and previous releases
    keep_cur=$(readlink "$1/current" 2>/dev/null || true)
    keep_prev=$(readlink "$1/previous" 2>/dev/null || true)
    for release in "$1"/releases/*; do
        [ -d "$release" ] || continue
        rel="releases/$(basename "$release")"
        if [ "$rel" != "$keep_cur" ] && [ "$rel" != "$keep_prev" ]; then rm -rf "$release"; echo "pruned $rel"; fi
    done
}

rollback() {  # ROOT: swap `current` and `previous`
    cur=$(readlink "$1/current" 2>/dev/null) || fail "no current version under $1"
    prev=$(readlink "$1/previous" 2>/dev/null) || fail "no previous version under $1 to roll back to"
    [ -d "$1/$prev" ] || fail "previous version $1/$prev is missing"
    swap_link "$1" current "$prev"
    swap_link "$1" previous "$cur"
    echo "current: $prev (previous: $cur)"
}

install_unit() {  # UNIT_DIR NAME, unit text on stdin
    mkdir -p "$1"
    cat > "$1/.$2.new"
    mv -f "$1/.$2.new" "$1/$2"
    echo "installed $1/$2"
}

restart() {  # NAME [COMMAND]: the given command, else systemctl where systemd runs, else say it was skipped
    if [ -n "${2:-}" ]; then
        sh -c "$2" || fail "restart command failed: $2"
        echo "restarted with: $2"
    elif command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        # The unit runs as this unprivileged system user (in the video group, for the cameras).
        if ! id obscura >/dev/null 2>&1; then
            useradd --system --no-create-home --shell /usr/sbin/nologin --user-group obscura >&2 \
                || fail "cannot create the service user obscura (useradd)"
            echo "created system user obscura"
        fi
        { systemctl daemon-reload && systemctl enable "$1" && systemctl restart "$1"; } >&2 \
            || fail "systemctl restart $1 failed (see journalctl -u $1)"
        echo "restarted with: systemctl restart $1"
    else
        echo "skipped restart: systemd is not running on the device (start the service by hand)"
    fi
}
