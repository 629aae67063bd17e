#!/usr/bin/env bash
# Make the Kubernetes 1.20.2 control-plane and node binaries ready on this machine
# and print the directory that holds them (kube-apiserver, kube-controller-manager,
# kube-scheduler, kube-proxy, kubelet).
#
#   scripts/k8s/binaries.sh                  cached, else shared tarball, else build
#   scripts/k8s/binaries.sh --from-source    build from Debian's source package even if a tarball is there
#   scripts/k8s/binaries.sh --cache DIR      cache somewhere else (default /var/cache/airgap-k8s)
#   scripts/k8s/binaries.sh --check          exit 0 if cached, 1 if not; changes nothing
#
# Where the binaries come from, in this order:
#   1. the machine's cache (DIR/bin), filled by an earlier run;
#   2. ../shared/tools/kubernetes/k8s-1.20.2-bin.tar.zst beside the clone (or
#      $AIRGAP_K8S_TARBALL), used only when its sha256 is the one pinned in SHA256SUMS here;
#   3. a build from Debian bookworm's `kubernetes` source package (the whole upstream
#      v1.20.2 tree) with Debian's golang-1.19-go, plus oom-score-adj.patch: about 15 min
#      on 2 cores, 2.3 GB of scratch space that is removed afterwards. It needs only the
#      Debian mirror apt already uses; the deb-src list and the toolchain are kept in the
#      cache, so the machine's apt sources and installed packages are not changed.
# Must run as root (the cache is machine-wide). Progress goes to stderr, the path to stdout.
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$HERE/../.." && pwd)
readonly HERE REPO_ROOT
readonly SRC_VERSION=1.20.5+really1.20.2-1.1+deb12u1
readonly SRC_DIR=kubernetes-1.20.2
readonly GO_VERSION=1.19
readonly TARBALL_NAME=k8s-1.20.2-bin.tar.zst
readonly BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet)
CACHE=${AIRGAP_K8S_CACHE:-/var/cache/airgap-k8s}
TARBALL=${AIRGAP_K8S_TARBALL:-$REPO_ROOT/../shared/tools/kubernetes/$TARBALL_NAME}
FROM_SOURCE=0
CHECK_ONLY=0

say() { printf 'k8s-binaries [%4ss] %s\n' "$SECONDS" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
pinned() { awk -v f="$1" '$2 == f {print $1}' "$HERE/SHA256SUMS"; }

while [[ $# -gt 0 ]]; do
    case $1 in
        --from-source) FROM_SOURCE=1; shift ;;
        --cache) CACHE=${2:?--cache needs a directory}; shift 2 ;;
        --check) CHECK_ONLY=1; shift ;;
        -h | --help) sed -n '2,21s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
CACHE=$(realpath -m "$CACHE")
readonly BIN=$CACHE/bin

cached() {
    local b
    [[ -f $BIN/.complete ]] || return 1
    for b in "${BINARIES[@]}"; do [[ -x $BIN/$b ]] || return 1; done
}

# Move a finished directory of binaries into place in one rename, so an interrupted
# run never leaves a half-filled cache that a later run would trust.
publish() {
    local dir=$1 how=$2 b
    for b in "${BINARIES[@]}"; do
        [[ -x $dir/$b ]] || die "$b missing after $how"
        "$dir/$b" --version 2>/dev/null | grep -q 'v1\.20\.2' || die "$dir/$b is not Kubernetes v1.20.2"
    done
    echo "$how" >"$dir/.complete"
    rm -rf "$BIN.old"
    [[ ! -d $BIN ]] || mv "$BIN" "$BIN.old"
    mv "$dir" "$BIN"
    rm -rf "$BIN.old"
}

from_tarball() {
    local want got tmp
    want=$(pinned "$TARBALL_NAME")
    got=$(sha256sum "$TARBALL" | cut -d' ' -f1)
    if [[ $got != "$want" ]]; then
        say "$TARBALL has sha256 $got, not the pinned $want: not used"
        return 1
    fi
    say "unpacking $TARBALL (sha256 matches the pinned hash)"
    command -v zstd >/dev/null || apt_install zstd
    tmp=$(mktemp -d "$CACHE/bin.unpack.XXXXXX")
    zstd -q -dc "$TARBALL" | tar -x -C "$tmp"
    publish "$tmp" "tarball sha256:$got"
}

apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2 || {
        apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2
    }
}

# The mirror apt already uses (deb822 sources or the one-line format).
mirror() {
    local m=""
    if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
        m=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    if [[ -z $m ]]; then
        m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}')
    fi
    [[ -n $m ]] || die "no Debian mirror found in /etc/apt/sources.list*; add one, then run again"
    echo "$m"
}

from_source() {
    local work=$CACHE/build apt=$CACHE/apt go=$CACHE/go$GO_VERSION m f want got
    command -v dpkg-source >/dev/null || apt_install dpkg-dev
    command -v rsync >/dev/null || apt_install rsync
    command -v make >/dev/null || apt_install make
    command -v patch >/dev/null || apt_install patch

    # A private apt state with only the deb-src entry: the machine's own sources are untouched.
    m=$(mirror)
    mkdir -p "$apt/lists/partial" "$apt/archives/partial"
    printf 'Types: deb-src\nURIs: %s\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$m" >"$apt/sources.sources"
    local -a aptopt=(-o "Dir::Etc::SourceList=$apt/none.list" -o "Dir::Etc::SourceParts=$apt"
                     -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache::Archives=$apt/archives"
                     -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=")
    : >"$apt/none.list"
    say "fetching Debian's kubernetes $SRC_VERSION source package from $m"
    apt-get "${aptopt[@]}" update -q >&2
    rm -rf "$work"
    mkdir -p "$work"
    (cd "$work" && apt-get "${aptopt[@]}" source --download-only -q "kubernetes=$SRC_VERSION" >&2)
    for f in "kubernetes_1.20.5+really1.20.2.orig.tar.gz" "kubernetes_${SRC_VERSION}.debian.tar.xz"; do
        want=$(pinned "$f")
        got=$(sha256sum "$work/$f" | cut -d' ' -f1)
        [[ $got == "$want" ]] || die "$f has sha256 $got, expected $want"
    done
    (cd "$work" && dpkg-source --skip-patches -x "kubernetes_${SRC_VERSION}.dsc" "$SRC_DIR" >&2)

    # The toolchain is unpacked, not installed: nothing on the machine's PATH changes.
    if [[ ! -x $go/usr/lib/go-$GO_VERSION/bin/go ]]; then
        say "fetching Debian's golang-$GO_VERSION-go toolchain"
        rm -rf "$go" "$go.debs"
        mkdir -p "$go.debs"
        (cd "$go.debs" && apt-get download -q "golang-$GO_VERSION-go" "golang-$GO_VERSION-src" >&2) || {
            apt-get update -q >&2
            (cd "$go.debs" && apt-get download -q "golang-$GO_VERSION-go" "golang-$GO_VERSION-src" >&2)
        }
        for f in "$go.debs"/*.deb; do dpkg-deb -x "$f" "$go.tmp"; done
        mv "$go.tmp" "$go"
        rm -rf "$go.debs"
    fi

    say "patching the kubelet's OOM score adjustments (oom-score-adj.patch)"
    (cd "$work/$SRC_DIR" && patch -p1 <"$HERE/oom-score-adj.patch" >&2)
    say "building ${BINARIES[*]} (about 15 min on 2 cores)"
    (
        cd "$work/$SRC_DIR"
        export PATH=$go/usr/lib/go-$GO_VERSION/bin:$PATH CGO_ENABLED=0
        make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet cmd/kube-proxy" >&2
    )
    local tmp
    tmp=$(mktemp -d "$CACHE/bin.build.XXXXXX")
    for f in "${BINARIES[@]}"; do cp "$work/$SRC_DIR/_output/bin/$f" "$tmp/$f"; done
    publish "$tmp" "built from Debian source kubernetes=$SRC_VERSION"
    rm -rf "$work"
}

if ((CHECK_ONLY)); then
    cached && { echo "$BIN"; exit 0; }
    exit 1
fi
[[ $(id -u) == 0 ]] || die "must run as root: the binaries are cached machine-wide in $CACHE"
mkdir -p "$CACHE"
exec 8>"$CACHE/.lock"
flock -w 3600 8 || die "another run holds $CACHE/.lock"
rm -rf "$CACHE"/bin.unpack.* "$CACHE"/bin.build.*

if ((!FROM_SOURCE)) && cached; then
    echo "$BIN"
    exit 0
fi
if ((!FROM_SOURCE)) && [[ -f $TARBALL ]] && from_tarball; then
    say "binaries ready in $BIN"
    echo "$BIN"
    exit 0
fi
((FROM_SOURCE)) || say "no usable prebuilt tarball: building from Debian's source package"
from_source
say "binaries ready in $BIN"
echo "$BIN"
