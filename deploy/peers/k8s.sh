# shellcheck shell=bash
# A real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler),
# kwok playing the nodes, and helm: all built from the Go module proxy, the only source of them
# these machines reach. Sourced by ensure.sh (uses its log/die/elapsed and $PEERS); `ensure.sh k8s`
# calls ensure_k8s. tests/peers/k8s.py starts the binaries.
#
# Result: $PEERS/k8s-$KUBERNETES_VERSION/{bin/<6 binaries>,kwok-stages.yaml,.complete}, built in a
# temp dir and renamed into place, so a half-finished build is never mistaken for a cached one. A
# failed or interrupted build costs little the second time: the Go build cache keeps the compiled
# packages (it grows by ~4.4 GB on a cold build).

# Static binaries (no cgo) as upstream releases are; the installed Go, never a downloaded
# toolchain; no workspace files or VCS stamping from wherever the source copy sits.
k8s_go() { GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off GOFLAGS="-buildvcs=false" go "$@"; }

# k8s_mod_copy <module@version> <dest>: a writable copy of a module's source (the module cache's
# copy is read-only and building there would edit it).
k8s_mod_copy() {
    local dir
    dir="$(k8s_go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')" \
        || die "go mod download $1 failed"
    rm -rf "$2"
    cp -r "$dir" "$2"
    chmod -R u+w "$2"
}

k8s_replaced() { # in cwd: every module path go.mod replaces
    k8s_go mod edit -json | python3 -c \
        'import json,sys; [print(r["Old"]["Path"]) for r in json.load(sys.stdin).get("Replace") or []]'
}

k8s_timed() { # k8s_timed <label> <cmd>...: runs cmd, logs its duration (the README quotes them)
    local t0
    t0=$(date +%s)
    "${@:2}" || return 1
    log "k8s: $1 built in $(elapsed "$t0")"
}

k8s_build_etcd() { # <work> <bin>
    local src="$1/etcd" r sib=()
    # The root module go.etcd.io/etcd/v3 is refused by the proxy (403); the server module's main
    # package is the etcd binary. Its go.mod replaces its siblings with ../api etc., absent from
    # the module zip: require the published siblings at the same version instead.
    k8s_mod_copy "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "$src"
    (
        cd "$src"
        for r in $(k8s_replaced); do k8s_go mod edit -dropreplace="$r"; done
        for r in api/v3 client/pkg/v3 client/v3 pkg/v3; do sib+=("go.etcd.io/etcd/$r@$ETCD_VERSION"); done
        k8s_go get "${sib[@]}"
        k8s_timed "etcd $ETCD_VERSION" k8s_go build -trimpath -ldflags='-s -w' -o "$2/etcd" .
    )
}

k8s_kubernetes_src() { # <dest>: a buildable copy of k8s.io/kubernetes (kubelet builds from it too)
    local minor_patch="${KUBERNETES_VERSION#v1.}" r
    local staging="v0.$minor_patch"
    k8s_mod_copy "k8s.io/kubernetes@$KUBERNETES_VERSION" "$1"
    (
        cd "$1"
        # The module zip has neither staging/src/k8s.io/* nor vendor/ contents: drop go.work and
        # vendor/, and point each staging replace at the published k8s.io/* module (v0.<minor>.<patch>).
        rm -rf go.work go.work.sum vendor
        local args=()
        for r in $(k8s_replaced); do args+=(-dropreplace="$r" -require="$r@$staging"); done
        k8s_go mod edit "${args[@]}"
        # replaced in-tree but never published (the proxy refuses them); nothing built here imports them
        k8s_go mod edit -droprequire=k8s.io/sample-cli-plugin -droprequire=k8s.io/sample-controller
    )
}

k8s_kubernetes_ldflags() { # what `kubectl version` and /version report (the release build stamps the same)
    local minor_patch="${KUBERNETES_VERSION#v1.}" p ld="-s -w"
    local minor="${minor_patch%%.*}"
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ld+=" -X $p.gitVersion=$KUBERNETES_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
        ld+=" -X $p.gitTreeState=clean -X $p.gitCommit=0000000000000000000000000000000000000000"
        ld+=" -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    echo "$ld"
}

k8s_build_kubernetes() { # <work> <bin>
    local src="$1/kubernetes" c ld
    local cmds=(kube-apiserver kube-controller-manager kube-scheduler)
    k8s_kubernetes_src "$src"
    ld="$(k8s_kubernetes_ldflags)"
    (
        cd "$src"
        k8s_go get "${cmds[@]/#/./cmd/}"
        for c in "${cmds[@]}"; do
            k8s_timed "$c $KUBERNETES_VERSION" k8s_go build -trimpath -ldflags="$ld" -o "$2/$c" "./cmd/$c"
        done
    )
}

k8s_build_kwok() { # <work> <bin> <stages-file>
    local src="$1/kwok" f first=1
    k8s_mod_copy "sigs.k8s.io/kwok@$KWOK_VERSION" "$src"
    (
        cd "$src"
        k8s_timed "kwok $KWOK_VERSION" k8s_go build -trimpath -ldflags='-s -w' -o "$2/kwok" ./cmd/kwok
        # kwok embeds no stages (kwokctl passes them) and exits "no stages found" without: keep
        # the "fast" node and pod lifecycles kwokctl uses, from the same module version.
        for f in kustomize/stage/node/fast/node-initialize.yaml \
            kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
            kustomize/stage/pod/fast/pod-ready.yaml \
            kustomize/stage/pod/fast/pod-complete.yaml \
            kustomize/stage/pod/fast/pod-delete.yaml; do
            [ -f "$f" ] || die "kwok $KWOK_VERSION has no $f"
            [ "$first" = 1 ] || echo '---'
            first=0
            cat "$f"
        done >"$3"
    )
}

k8s_build_helm() { # <bin>
    # helm's go.mod has no replace directives, so go install builds it as is.
    (
        export GOBIN="$1"
        k8s_timed "helm $HELM_VERSION" k8s_go install -trimpath \
            -ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
            "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
    )
}

k8s_build_all() { # <tmp>
    k8s_build_etcd "$1/src" "$1/bin"
    k8s_build_kubernetes "$1/src" "$1/bin"
    k8s_build_kwok "$1/src" "$1/bin" "$1/kwok-stages.yaml"
    k8s_build_helm "$1/bin"
}

ensure_k8s() {
    local t0 dest want tmp log_file
    t0=$(date +%s)
    dest="$PEERS/k8s-$KUBERNETES_VERSION"
    want="etcd=$ETCD_VERSION kubernetes=$KUBERNETES_VERSION kwok=$KWOK_VERSION helm=$HELM_VERSION cgo=0"
    if [ -f "$dest/.complete" ] && [ "$(cat "$dest/.complete")" = "$want" ]; then
        log "k8s: cached ($dest/bin)"
        return 0
    fi
    command -v go >/dev/null || die "go is not installed (needed to build Kubernetes from the Go module proxy)"
    apt_install_missing openssl
    mkdir -p "$PEERS"
    tmp="$(mktemp -d "$PEERS/.k8s-tmp.XXXXXX")"
    mkdir -p "$tmp/bin" "$tmp/src"
    log_file="$PEERS/k8s-build.log"
    log "k8s: building etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok, helm" \
        "(about 25 minutes cold on 2 cores; log: $log_file)"
    # errexit is ignored inside an `if`/`||` condition, so the build runs as a plain command in
    # a subshell with errexit on, and its status is read afterwards.
    local rc=0
    set +e
    (set -e; k8s_build_all "$tmp") >"$log_file" 2>&1
    rc=$?
    set -e
    if [ "$rc" -ne 0 ]; then
        tail -n 30 "$log_file" >&2
        rm -rf "$tmp"
        die "k8s build failed (full log: $log_file)"
    fi
    grep -F 'built in' "$log_file" >&2 || true
    rm -rf "$tmp/src"
    echo "$want" >"$tmp/.complete"
    rm -rf "$dest"
    mv "$tmp" "$dest"
    log "k8s: built $(ls "$dest/bin" | tr '\n' ' ')($(du -sh "$dest/bin" | cut -f1)) in $(elapsed "$t0")"
}

# ---------------------------------------------------------------------------------------------
# A real node for the data path through real pods (tests/peers/k8snode.py): kubelet from the same
# k8s.io/kubernetes tree as the control plane, Debian's containerd, runc and CNI plugins, and a
# static "pause" binary (deploy/peers/pause) the fixture turns into the sandbox image, as no
# registry these machines reach serves one. Result: $PEERS/k8s-node-$KUBERNETES_VERSION/
# {bin/kubelet,bin/pause,.complete}, renamed into place as the control plane's is.

k8s_node_build_all() { # <tmp>
    local src="$1/src/kubernetes" ld
    k8s_kubernetes_src "$src"
    ld="$(k8s_kubernetes_ldflags)"
    (
        cd "$src"
        k8s_go get ./cmd/kubelet
        k8s_timed "kubelet $KUBERNETES_VERSION" k8s_go build -trimpath -ldflags="$ld" \
            -o "$1/bin/kubelet" ./cmd/kubelet
    )
    (cd "$HERE/pause" && k8s_timed "pause" k8s_go build -trimpath -ldflags='-s -w' -o "$1/bin/pause" .)
}

ensure_k8s_node() {
    local t0 dest want tmp log_file pause_hash rc=0
    t0=$(date +%s)
    # iptables: the fixture keeps pod traffic on the bridge; containerd's CRI needs the CNI plugins
    apt_install_missing containerd runc containernetworking-plugins iptables
    dest="$PEERS/k8s-node-$KUBERNETES_VERSION"
    pause_hash="$(cat "$HERE/pause/main.go" "$HERE/pause/go.mod" | sha256sum | cut -c1-12)"
    want="kubernetes=$KUBERNETES_VERSION kubelet pause=$pause_hash cgo=0"
    if [ -f "$dest/.complete" ] && [ "$(cat "$dest/.complete")" = "$want" ]; then
        log "k8s-node: cached ($dest/bin)"
        return 0
    fi
    command -v go >/dev/null || die "go is not installed (needed to build kubelet from the Go module proxy)"
    mkdir -p "$PEERS"
    tmp="$(mktemp -d "$PEERS/.k8s-node-tmp.XXXXXX")"
    mkdir -p "$tmp/bin" "$tmp/src"
    log_file="$PEERS/k8s-node-build.log"
    log "k8s-node: building kubelet and pause (about 5 minutes once the control plane's Go build" \
        "cache is warm; log: $log_file)"
    set +e
    (set -e; k8s_node_build_all "$tmp") >"$log_file" 2>&1
    rc=$?
    set -e
    if [ "$rc" -ne 0 ]; then
        tail -n 30 "$log_file" >&2
        rm -rf "$tmp"
        die "k8s-node build failed (full log: $log_file)"
    fi
    grep -F 'built in' "$log_file" >&2 || true
    rm -rf "$tmp/src"
    echo "$want" >"$tmp/.complete"
    rm -rf "$dest"
    mv "$tmp" "$dest"
    log "k8s-node: built $(ls "$dest/bin" | tr '\n' ' ')($(du -sh "$dest/bin" | cut -f1)) in $(elapsed "$t0")"
}
