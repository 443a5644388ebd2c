#!/usr/bin/env bash
# Build tickrun's offline Python base image without a container registry: debootstrap a minimal
# Debian (Python 3.11, venv + bundled pip/setuptools wheels) from the Debian mirror this host's
# apt already uses, strip it, and `podman import` it.
#
# usage: deploy/images/build-base.sh [image-name]      (default: BASE_IMAGE from versions.env)
# env:   TICKRUN_DEBIAN_MIRROR  override the mirror read from /etc/apt/sources.list*
#        TICKRUN_BASE_HASH      value of the dev.tickrun.base.hash label (set by ensure.sh)
# Needs root (debootstrap) and podman configured via podman-env.sh (ensure.sh does both).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../peers/versions.env
source "$HERE/../peers/versions.env"
IMAGE="${1:-$BASE_IMAGE}"
SUITE="$DEBIAN_SUITE"
PEERS="${TICKRUN_CACHE:-$HOME/.cache/tickrun}/peers"
WORK="$PEERS/images"

log() { printf '[build-base %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "debootstrap needs root"
[ -n "${CONTAINERS_CONF:-}" ] || source "$HERE/podman-env.sh"

debian_mirror() {
    # Prefer a mirror that apt uses for $SUITE itself; otherwise any Debian archive apt uses
    # (a trixie host's mirror serves bookworm too). Security/updates suites live elsewhere.
    python3 - "$SUITE" <<'PY'
import glob, re, sys
suite = sys.argv[1]
entries = []  # (uri, suites)
files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
for path in files:
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError:
        continue
    for line in lines:
        line = line.split("#", 1)[0].strip()
        line = re.sub(r"\[[^\]]*\]", "", line)  # drop [signed-by=...] options
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "deb":
            entries.append((parts[1], [parts[2]]))
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    try:
        text = open(path, encoding="utf-8").read()
    except OSError:
        continue
    for stanza in re.split(r"\n\s*\n", text):
        fields = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[0].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.split()
        if "deb" not in fields.get("types", []) or fields.get("enabled", ["yes"])[0] == "no":
            continue
        for uri in fields.get("uris", []):
            entries.append((uri, fields.get("suites", [])))
for uri, suites in entries:
    if suite in suites:
        print(uri.rstrip("/"))
        sys.exit(0)
for uri, suites in entries:
    if uri.rstrip("/").endswith("/debian"):
        print(uri.rstrip("/"))
        sys.exit(0)
sys.exit(1)
PY
}

MIRROR="${TICKRUN_DEBIAN_MIRROR:-}"
if [ -z "$MIRROR" ]; then
    MIRROR="$(debian_mirror)" || die "no Debian mirror in /etc/apt/sources.list*; set TICKRUN_DEBIAN_MIRROR"
fi
log "debootstrap $SUITE from $MIRROR into a temp rootfs"

mkdir -p "$WORK/debootstrap-cache"
ROOTFS="$(mktemp -d "$WORK/.rootfs.XXXXXX")"

cleanup() {
    # debootstrap mounts /proc and /sys inside the target; a failed run can leave them mounted,
    # and rm -rf through a live /proc or /sys mount would be destructive.
    local m
    for m in $(awk -v r="$ROOTFS" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf --one-file-system "$ROOTFS"
}
trap cleanup EXIT

# python3-venv brings ensurepip's bundled pip/setuptools wheels, which is all that
# `python3 -m venv` + `pip install --no-index --find-links <wheelhouse>` needs; python3-pip
# itself would only add ~10 MB of a system pip nobody should use.
debootstrap --variant=minbase --include=python3,python3-venv --components=main \
    --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
    --cache-dir="$WORK/debootstrap-cache" \
    "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log: $WORK/debootstrap.log)"; }

log "stripping caches and docs"
# Keep each package's copyright file (license obligations); drop everything else of docs.
find "$ROOTFS/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$ROOTFS/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/locale/* \
    "$ROOTFS"/usr/share/lintian "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
    "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/cache/debconf/*-old \
    "$ROOTFS"/var/lib/dpkg/*-old "$ROOTFS"/tmp/* "$ROOTFS"/root/.cache
find "$ROOTFS/var/log" -type f -delete
# Host-specific files debootstrap copies in; podman supplies its own at run time.
: >"$ROOTFS/etc/resolv.conf"
echo localhost >"$ROOTFS/etc/hostname"

PYVER="$(chroot "$ROOTFS" python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
log "rootfs has Python $PYVER ($(du -sh "$ROOTFS" | cut -f1)); importing as $IMAGE"

tar -C "$ROOTFS" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -c . \
    | podman import -q \
        --change 'CMD ["/usr/bin/python3"]' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change "LABEL dev.tickrun.base.hash=${TICKRUN_BASE_HASH:-manual}" \
        --change "LABEL dev.tickrun.base.debian=$SUITE" \
        --change "LABEL dev.tickrun.base.python=$PYVER" \
        - "$IMAGE" >/dev/null
log "imported $IMAGE"
