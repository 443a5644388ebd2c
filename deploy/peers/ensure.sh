#!/usr/bin/env bash
# Assemble tickrun's real test peers (Kafka, MinIO, podman + offline Python base image, a
# Kubernetes control plane with kwok nodes and helm, PostgreSQL, a container registry) from the registries these
# machines can reach (Maven Central, Go module proxy, Debian apt), caching the
# results under ${TICKRUN_CACHE:-$HOME/.cache/tickrun}/peers so a second run is a fast no-op.
#
# usage: deploy/peers/ensure.sh {kafka|minio|podman|k8s|k8s-node|postgres|registry|all} [...]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"

# versions.env is plain KEY=VALUE so the Python fixtures can read the same pins.
# shellcheck source=versions.env
source "$HERE/versions.env"

CACHE_ROOT="${TICKRUN_CACHE:-$HOME/.cache/tickrun}"
PEERS="$CACHE_ROOT/peers"

log() { printf '[ensure %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

elapsed() { # seconds since $1 (from `date +%s`)
    echo "$(( $(date +%s) - $1 ))s"
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root for: $*"
    fi
}

apt_install_missing() { # apt_install_missing <pkg>...; installs only packages not yet installed
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "apt-get install ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------------------------------------
# Kafka: the broker's whole runtime classpath from Maven Central.
ensure_kafka() {
    local t0 dest stamp want
    t0=$(date +%s)
    dest="$PEERS/kafka-$KAFKA_VERSION"
    stamp="$dest/.complete"
    # The stamp records the pom's hash so editing the pom (e.g. another logging binding)
    # re-resolves instead of silently keeping a stale classpath.
    want="$(sha256sum "$HERE/kafka/pom.xml" | cut -c1-16) $KAFKA_VERSION"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        log "kafka $KAFKA_VERSION: cached ($dest/libs)"
        return 0
    fi
    command -v java >/dev/null || apt_install_missing openjdk-17-jre-headless
    command -v mvn >/dev/null || apt_install_missing maven
    log "kafka $KAFKA_VERSION: resolving broker classpath from Maven Central"
    mkdir -p "$PEERS"
    local tmp
    tmp="$(mktemp -d "$PEERS/.kafka-tmp.XXXXXX")"
    # Resolve into a temp dir and rename at the end so an interrupted run never leaves a
    # half-populated libs/ that a later run would mistake for complete.
    # Output goes to a log (Maven 3.8 prints ANSI resets even with -q -B); shown on failure.
    mvn -q -B -f "$HERE/kafka/pom.xml" \
        -Dkafka.version="$KAFKA_VERSION" -Dkafka.scala="$KAFKA_SCALA" \
        dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp/libs" \
        >"$PEERS/kafka-mvn.log" 2>&1 \
        || { tail -n 40 "$PEERS/kafka-mvn.log" >&2; rm -rf "$tmp"; die "mvn failed (log: $PEERS/kafka-mvn.log)"; }
    # Maven writes target/ next to the pom even for copy-dependencies into another dir.
    rm -rf "$HERE/kafka/target"
    ls "$tmp/libs/kafka_${KAFKA_SCALA}-${KAFKA_VERSION}.jar" >/dev/null \
        || die "kafka jar missing after mvn run"
    ls "$tmp/libs"/slf4j-reload4j-*.jar >/dev/null || die "slf4j binding missing after mvn run"
    echo "$want" >"$tmp/.complete"
    rm -rf "$dest"
    mv "$tmp" "$dest"
    log "kafka $KAFKA_VERSION: $(ls "$dest/libs" | wc -l) jars in $dest/libs ($(elapsed "$t0"))"
}

# ---------------------------------------------------------------------------------------------
# MinIO: built from source via the Go module proxy (minutes on 2 cores, so cached).
ensure_minio() {
    local t0 bin stamp want
    t0=$(date +%s)
    bin="$PEERS/bin/minio"
    stamp="$PEERS/bin/minio.version"
    # -s -w drops the symbol tables: ~1/3 smaller binary in the cache, nothing tests need.
    # CGO off: a static binary, no C toolchain needed.
    local ldflags="-s -w"
    want="$MINIO_VERSION cgo=0 trimpath ldflags=$ldflags"
    if [ -x "$bin" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        log "minio $MINIO_VERSION: cached ($bin)"
        return 0
    fi
    command -v go >/dev/null || die "go is not installed (needed to build MinIO from the Go module proxy)"
    mkdir -p "$PEERS/bin"
    local tmpbin log_file
    tmpbin="$(mktemp -d "$PEERS/.minio-bin.XXXXXX")"
    log_file="$PEERS/minio-build.log"
    log "minio $MINIO_VERSION: go install (about 3 minutes cold on 2 cores; log: $log_file)"
    # GOTOOLCHAIN=local: build with the installed Go instead of letting go.mod's toolchain line
    # trigger a toolchain download.
    export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-buildvcs=false"
    if ! GOBIN="$tmpbin" go install -trimpath -ldflags="$ldflags" "$MINIO_MODULE@$MINIO_VERSION" \
            >"$log_file" 2>&1; then
        if grep -qE 'contains one or more (replace|exclude) directives|must not contain directives' "$log_file"; then
            # go install refuses modules whose go.mod has replace/exclude directives: build the
            # downloaded source as the main module instead.
            log "minio: go install refused the module (replace/exclude); building the source module"
            local dir src
            dir="$(go mod download -json "$MINIO_MODULE@$MINIO_VERSION" \
                | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
            src="$(mktemp -d "$PEERS/.minio-src.XXXXXX")"
            cp -r "$dir/." "$src/"
            chmod -R u+w "$src"
            (cd "$src" && GOFLAGS="-buildvcs=false -mod=mod" \
                go build -trimpath -ldflags="$ldflags" -o "$tmpbin/minio" .) >>"$log_file" 2>&1 \
                || { tail -n 30 "$log_file" >&2; rm -rf "$src" "$tmpbin"; die "minio build failed"; }
            rm -rf "$src"
        else
            tail -n 30 "$log_file" >&2
            rm -rf "$tmpbin"
            die "minio go install failed (full log: $log_file)"
        fi
    fi
    mv -f "$tmpbin/minio" "$bin"
    rmdir "$tmpbin"
    echo "$want" >"$stamp"
    log "minio $MINIO_VERSION: built $bin, $(du -h "$bin" | cut -f1) ($(elapsed "$t0"))"
}

# ---------------------------------------------------------------------------------------------
# podman + the offline Python base image.
ensure_podman() {
    local t0
    t0=$(date +%s)
    # catatonit backs `podman run --init`; fuse-overlayfs lets the overlay driver work where the
    # graphroot sits on a filesystem the kernel overlay cannot use.
    apt_install_missing podman buildah runc catatonit fuse-overlayfs debootstrap zstd \
        debian-archive-keyring
    log "podman: packages present ($(elapsed "$t0"))"

    # shellcheck source=../images/podman-env.sh
    source "$REPO/deploy/images/podman-env.sh"

    local hash image_dir archive current
    # The build script and its inputs define the image; any change produces a new archive name.
    hash="$(cat "$REPO/deploy/images/build-base.sh" "$HERE/versions.env" | sha256sum | cut -c1-12)"
    image_dir="$PEERS/images"
    archive="$image_dir/tickrun-base-${hash}.tar.zst"
    mkdir -p "$image_dir"

    current="$(podman image inspect --format '{{index .Labels "dev.tickrun.base.hash"}}' \
        "$BASE_IMAGE" 2>/dev/null || true)"
    if [ "$current" = "$hash" ]; then
        log "podman: $BASE_IMAGE present (hash $hash)"
        return 0
    fi

    # Remember the outdated image so it can be dropped once the new one holds the tag;
    # otherwise every build-script change leaves a dangling ~130 MB image in the store.
    local stale_id t1
    stale_id="$(podman image inspect --format '{{.Id}}' "$BASE_IMAGE" 2>/dev/null || true)"
    t1=$(date +%s)
    if [ -f "$archive" ]; then
        log "podman: loading $BASE_IMAGE from $archive"
        if zstd -q -dc "$archive" | podman load -q >/dev/null; then
            log "podman: loaded ($(elapsed "$t1"))"
        else
            # A truncated archive (interrupted save, partial CI cache restore) must not wedge
            # every later run: drop it and rebuild.
            log "podman: loading failed; deleting the archive and rebuilding"
            rm -f "$archive"
        fi
    fi
    if [ ! -f "$archive" ]; then
        log "podman: building $BASE_IMAGE with debootstrap (about 2 minutes)"
        TICKRUN_BASE_HASH="$hash" "$REPO/deploy/images/build-base.sh" "$BASE_IMAGE"
        log "podman: built ($(elapsed "$t1")); saving $archive"
        local t2
        t2=$(date +%s)
        # Old archives belong to previous build-script versions and would only grow the cache.
        rm -f "$image_dir"/tickrun-base-*.tar.zst
        podman save "$BASE_IMAGE" | zstd -q -T0 -o "$archive.tmp"
        mv -f "$archive.tmp" "$archive"
        log "podman: saved $(du -h "$archive" | cut -f1) ($(elapsed "$t2"))"
    fi

    current="$(podman image inspect --format '{{index .Labels "dev.tickrun.base.hash"}}' "$BASE_IMAGE")"
    [ "$current" = "$hash" ] || die "$BASE_IMAGE has hash label '$current', expected '$hash'"
    if [ -n "$stale_id" ]; then
        # Fails harmlessly when images built FROM the old base still use it.
        podman rmi "$stale_id" >/dev/null 2>&1 && log "podman: removed outdated base image ${stale_id:0:12}" || true
    fi
    # Catch a broken containers.conf/storage setup here, not in the middle of a test run.
    local pyver
    pyver="$(podman run --rm --init "$BASE_IMAGE" python3 -c 'import sys; print(sys.version.split()[0])')"
    log "podman: $BASE_IMAGE runs Python $pyver ($(elapsed "$t0") total)"
}

# ---------------------------------------------------------------------------------------------
# Container registry (CNCF distribution): the kubernetes platform's builder pushes to it in tests.
ensure_registry() {
    local t0 dest stamp want ldflags="-s -w"
    t0=$(date +%s)
    dest="$PEERS/registry-$REGISTRY_VERSION"
    stamp="$dest/.complete"
    want="$REGISTRY_VERSION cgo=0 trimpath ldflags=$ldflags"
    if [ -x "$dest/bin/registry" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        log "registry $REGISTRY_VERSION: cached ($dest/bin/registry)"
        return 0
    fi
    command -v go >/dev/null || die "go is not installed (needed to build the registry from the Go module proxy)"
    local tmp log_file="$PEERS/registry-build.log"
    # Built into a temp dir renamed at the end: an interrupted build is never taken for a cached one.
    tmp="$(mktemp -d "$PEERS/.registry-tmp.XXXXXX")"
    log "registry $REGISTRY_VERSION: go install (about 2 minutes cold on 2 cores; log: $log_file)"
    if ! (export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-buildvcs=false"
          GOBIN="$tmp/bin" go install -trimpath -ldflags="$ldflags" \
              "github.com/distribution/distribution/v3/cmd/registry@$REGISTRY_VERSION") \
            >"$log_file" 2>&1; then
        tail -n 30 "$log_file" >&2
        rm -rf "$tmp"
        die "registry go install failed (full log: $log_file)"
    fi
    "$tmp/bin/registry" --version >/dev/null || { rm -rf "$tmp"; die "the built registry does not run"; }
    echo "$want" >"$tmp/.complete"
    chmod 755 "$tmp"
    rm -rf "$dest"
    mv "$tmp" "$dest"
    log "registry $REGISTRY_VERSION: built $dest/bin/registry, $(du -h "$dest/bin/registry" | cut -f1) ($(elapsed "$t0"))"
}

# ---------------------------------------------------------------------------------------------
# Kubernetes (etcd, control plane, kwok, helm; kubelet for a real node): long enough to live in
# its own file.
# shellcheck source=k8s.sh
source "$HERE/k8s.sh"

# PostgreSQL: Debian's server; the test fixture runs initdb/pg_ctl itself, no system service.
ensure_postgres() {
    apt_install_missing postgresql
    local bindir
    bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    [ -x "$bindir/initdb" ] || die "postgresql is installed but no /usr/lib/postgresql/*/bin/initdb"
    log "postgres: $("$bindir/postgres" --version)"
}

usage() { echo "usage: $0 {kafka|minio|podman|k8s|k8s-node|postgres|registry|all} [...]" >&2; exit 2; }

[ "$#" -ge 1 ] || usage
mkdir -p "$PEERS"
# Several checkouts/CI jobs on one machine share the cache: serialize whole runs so two of them
# never build into the same directories at once. The cached path is fast, so waiting is short.
exec 9>"$PEERS/.ensure.lock"
if ! flock -n 9; then
    log "another ensure.sh run holds $PEERS/.ensure.lock; waiting"
    flock 9
fi
for target in "$@"; do
    case "$target" in
        kafka) ensure_kafka ;;
        minio) ensure_minio ;;
        podman) ensure_podman ;;
        k8s) ensure_k8s ;;
        k8s-node) ensure_k8s_node ;;
        postgres) ensure_postgres ;;
        registry) ensure_registry ;;
        # bubblewrap: the process platform's replica sandbox (controller/platforms/sandbox.py);
        # chromium: the web UI's browser tests; haproxy: the controller's HAProxy edge
        all)
            ensure_kafka; ensure_minio; ensure_podman
            apt_install_missing bubblewrap chromium haproxy
            ensure_postgres; ensure_registry; ensure_k8s; ensure_k8s_node ;;
        *) usage ;;
    esac
done
log "done: $* (cache: $PEERS)"
