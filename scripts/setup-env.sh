#!/usr/bin/env bash
# Set up (or check) the container environment airgap needs on a Debian 12
# machine without systemd: Docker Engine, a loopback image registry, podman,
# a debootstrapped python base image pushed to that registry, and that image
# plus openssl (the bare far side bundle/install.sh is tested on), and a second,
# older "site-approved" base (bullseye, Python 3.9) that `airgap rebuild` is tested on, and the
# single-node Kubernetes 1.20.2 cluster the kubernetes target is tested on (scripts/cluster.sh).
#
#   scripts/setup-env.sh          set up whatever is missing (idempotent)
#   scripts/setup-env.sh --check  only report; exit 1 if anything is not ready
#
# Must run as root. Safe to run repeatedly: a second run changes nothing.
set -euo pipefail
# Let failures inside $(...) abort too, not just be swallowed.
shopt -s inherit_errexit

readonly REGISTRY=127.0.0.1:5000
readonly BASE_REPO=airgap/python-base
readonly BASE_TAG=bookworm
readonly BASE_IMAGE="$REGISTRY/$BASE_REPO:$BASE_TAG"
# The bare far side bundle/install.sh is tested on: the base image plus Debian's openssl.
readonly OPENSSL_REPO=airgap/python-openssl
readonly OPENSSL_IMAGE="$REGISTRY/$OPENSSL_REPO:$BASE_TAG"
readonly SUITE=bookworm
# A second, older base image: the "site-approved" base `airgap rebuild` is tested against
# (another Debian release, another Python: bullseye ships 3.9 and glibc 2.31).
readonly SITE_SUITE=bullseye
readonly SITE_REPO=airgap/site-base
readonly SITE_IMAGE="$REGISTRY/$SITE_REPO:$SITE_SUITE"

readonly CONF_DIR=/etc/airgap-env
readonly STATE_DIR=/var/lib/airgap-env
readonly LOG_DIR=/var/log/airgap-env
readonly RUN_DIR=/run/airgap-env
readonly REGISTRY_CONF="$CONF_DIR/registry.yml"
readonly REGISTRY_PIDFILE="$RUN_DIR/registry.pid"
# The storage driver that worked the first time; reused so that a restarted
# engine still sees the images it stored (each driver has its own store).
readonly DRIVER_FILE="$STATE_DIR/docker-storage-driver"
readonly PODMAN_CONF=/etc/containers/containers.conf.d/airgap.conf
readonly PODMAN_REGISTRIES=/etc/containers/registries.conf.d/airgap.conf

ENV_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env"
readonly ENV_DIR

# apt packages and why:
#   docker.io        Docker Engine (dockerd + containerd + runc); the CLI in
#                    /usr/local/bin stays first on PATH and talks to it
#   docker-registry  the loopback registry (distribution 2.8)
#   podman crun conmon catatonit netavark aardvark-dns
#                    podman, OCI runtime, pause binary for pods (kube play),
#                    network backend and its DNS
#   fuse-overlayfs   storage-driver fallback when kernel overlay fails
#   uidmap iproute2 util-linux iptables   namespaces/networking helpers
#   debootstrap      builds the base image rootfs
#   curl             registry API probes
#   shellcheck       the tests lint the bundle's install.sh as POSIX sh
#   prometheus       promtool: the tests check and unit-test the bundle's alert rules with it
#   wrk              the C load generator benchmarks/serve.py measures the model server with
readonly PACKAGES=(
    docker.io docker-registry podman crun conmon catatonit netavark aardvark-dns
    fuse-overlayfs uidmap iproute2 util-linux iptables debootstrap curl shellcheck prometheus
    wrk
)

readonly MANIFEST_ACCEPT=(
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json'
    -H 'Accept: application/vnd.docker.distribution.manifest.list.v2+json'
    -H 'Accept: application/vnd.oci.image.manifest.v1+json'
    -H 'Accept: application/vnd.oci.image.index.v1+json'
)

CHECK_ONLY=0
NOT_READY=0

# Every line says how far into the set-up it is, so a newcomer sees what takes the time.
say() { printf 'setup [%4ss] %s\n' "$SECONDS" "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
# In --check mode a missing piece is recorded, not fixed.
not_ready() { say "$1: NOT READY ($2)"; NOT_READY=1; }

usage() {
    sed -n '2,11s/^# \{0,1\}//p' "$0"
}

# ---------------------------------------------------------------- helpers

# Copy a config file from scripts/env only if it differs, so re-runs do not
# touch mtimes. Prints "installed"/"updated"/"unchanged". Returns 0 always.
install_config() {
    local src=$1 dst=$2
    if [[ -f $dst ]] && cmp -s "$src" "$dst"; then
        echo unchanged
    elif [[ -f $dst ]]; then
        install -D -m 0644 "$src" "$dst"; echo updated
    else
        install -D -m 0644 "$src" "$dst"; echo installed
    fi
}

config_matches() { [[ -f $2 ]] && cmp -s "$1" "$2"; }

# True if pid $1 is running (a zombie child of ours does not count).
running() {
    local state
    state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [[ -n $state && $state != Z ]]
}

# True if $1 is the pid of a running process whose executable is named $2
# (pid files can outlive their process and the pid can be reused).
pid_alive() {
    local pid=$1 name=$2
    [[ $pid =~ ^[0-9]+$ ]] && running "$pid" || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]]
}

# Stop one process we started, by pid: TERM, then KILL after $2 seconds.
stop_pid() {
    local pid=$1 grace=${2:-20}
    kill "$pid" 2>/dev/null || return 0
    wait_for "$grace" not_running "$pid" || kill -9 "$pid" 2>/dev/null || true
}
not_running() { ! running "$1"; }

# wait_for SECONDS CMD... : poll CMD every 0.5 s until it succeeds.
wait_for() {
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

docker_ok() { docker info >/dev/null 2>&1; }
registry_ok() { curl -fsS -o /dev/null --max-time 3 "http://$REGISTRY/v2/" 2>/dev/null; }

# Digest of BASE_IMAGE (or of repo $1, same tag) in the registry, empty if absent.
registry_digest() {
    curl -fsS --max-time 10 -o /dev/null -D - "${MANIFEST_ACCEPT[@]}" \
        "http://$REGISTRY/v2/${1:-$BASE_REPO}/manifests/$BASE_TAG" 2>/dev/null |
        tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}' || true
}

# repo@digest the local engine recorded for BASE_IMAGE (or repo $1), empty if none.
engine_repo_digest() {
    local repo=${1:-$BASE_REPO}
    docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' \
        "$REGISTRY/$repo:$BASE_TAG" 2>/dev/null | grep -m1 "^$REGISTRY/$repo@" || true
}

# ---------------------------------------------------------- 1. packages

ensure_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
            missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        say "packages: already installed"
        return
    fi
    if ((CHECK_ONLY)); then not_ready packages "missing: ${missing[*]}"; return; fi

    say "packages: installing ${missing[*]} ..."
    mkdir -p "$LOG_DIR"
    # Keep maintainer scripts from starting docker/containerd/docker-registry
    # through their init scripts (the Debian registry would grab :5000 with
    # its own config). Only add the policy if none exists, and always remove
    # what we added.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 0755 "$policy"
        added_policy=1
    fi
    local rc=0
    {
        apt-get update -q &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
                --no-install-recommends "${missing[@]}"
    } >>"$LOG_DIR/apt.log" 2>&1 </dev/null || rc=$?
    ((added_policy)) && rm -f "$policy"
    if ((rc != 0)); then
        tail -n 20 "$LOG_DIR/apt.log" >&2
        die "apt-get failed (exit $rc); full log: $LOG_DIR/apt.log"
    fi
    hash -r
    say "packages: installed ${missing[*]}"
}

# The docker.io package also ships /usr/bin/docker (20.10). Whichever CLI
# comes first on PATH must be able to talk to the engine; a newer CLI
# negotiates the engine's API version down.
check_docker_cli() {
    local cli
    cli=$(command -v docker) || { not_ready "docker cli" "no docker on PATH"; return; }
    if docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
        say "docker cli: $cli $(docker version --format '{{.Client.Version}}') talks to engine $(docker version --format '{{.Server.Version}}' 2>/dev/null)"
    else
        not_ready "docker cli" "$cli cannot talk to the engine"
    fi
}

# ----------------------------------------------------- 2. docker engine

dockerd_pid() {
    local pid
    pid=$(cat /var/run/docker.pid 2>/dev/null) || return 1
    pid_alive "$pid" dockerd && echo "$pid"
}

# Start dockerd with one storage driver; 0 if it answers using that driver.
# On failure the daemon we started is stopped again.
try_dockerd() {
    local driver=$1 pid
    mkdir -p "$LOG_DIR"
    printf '\n==== %s starting dockerd --storage-driver=%s\n' "$(date -Is)" "$driver" \
        >>"$LOG_DIR/dockerd.log"
    # No systemd here: run it detached in its own session; no bridge and
    # no iptables because containers use network_mode none or host.
    setsid nohup dockerd --iptables=false --bridge=none --ip-forward=false \
        --storage-driver="$driver" \
        </dev/null >>"$LOG_DIR/dockerd.log" 2>&1 &
    pid=$!
    local deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)); do
        if docker_ok; then
            if [[ $(docker info --format '{{.Driver}}' 2>/dev/null) == "$driver" ]]; then
                return 0
            fi
            break
        fi
        running "$pid" || break   # exited: driver unusable
        sleep 0.5
    done
    # Not usable: stop the daemon we just started (only that pid).
    running "$pid" && stop_pid "$pid" 20
    wait "$pid" 2>/dev/null || true
    return 1
}

ensure_docker() {
    if docker_ok; then
        say "docker engine: already running ($(docker info --format '{{.ServerVersion}}, storage {{.Driver}}'))"
        return
    fi
    if ((CHECK_ONLY)); then not_ready "docker engine" "docker info fails"; return; fi

    # A dockerd that is still starting up: give it time rather than racing it.
    local pid
    if pid=$(dockerd_pid); then
        say "docker engine: dockerd (pid $pid) running but not answering, waiting ..."
        wait_for 60 docker info || {
            tail -n 30 "$LOG_DIR/dockerd.log" >&2 || true
            die "dockerd pid $pid does not answer; see $LOG_DIR/dockerd.log"
        }
        say "docker engine: answering"
        return
    fi

    # overlay2 is fastest; fuse-overlayfs works where the kernel overlay
    # cannot be used (e.g. nested overlay); vfs always works but copies.
    local candidates=(overlay2 fuse-overlayfs vfs) driver
    if [[ -s $DRIVER_FILE ]]; then candidates=("$(cat "$DRIVER_FILE")"); fi
    for driver in "${candidates[@]}"; do
        if try_dockerd "$driver"; then
            mkdir -p "$STATE_DIR"
            [[ -s $DRIVER_FILE ]] || echo "$driver" >"$DRIVER_FILE"
            say "docker engine: started ($(docker info --format '{{.ServerVersion}}'), storage $driver, log $LOG_DIR/dockerd.log)"
            return
        fi
        say "docker engine: storage driver $driver did not work, trying next"
    done
    tail -n 30 "$LOG_DIR/dockerd.log" >&2 || true
    die "dockerd did not come up with any of: ${candidates[*]}; see $LOG_DIR/dockerd.log"
}

# ---------------------------------------------------------- 3. registry

registry_pid() {
    local pid
    pid=$(cat "$REGISTRY_PIDFILE" 2>/dev/null) || return 1
    pid_alive "$pid" docker-registry && echo "$pid"
}

start_registry() {
    mkdir -p "$STATE_DIR/registry" "$LOG_DIR" "$RUN_DIR"
    setsid nohup /usr/bin/docker-registry serve "$REGISTRY_CONF" \
        </dev/null >>"$LOG_DIR/registry.log" 2>&1 &
    local pid=$!
    echo "$pid" >"$REGISTRY_PIDFILE"
    local deadline=$((SECONDS + 30))
    until registry_ok; do
        if ! running "$pid" || ((SECONDS >= deadline)); then
            tail -n 20 "$LOG_DIR/registry.log" >&2 || true
            die "registry did not answer on $REGISTRY; see $LOG_DIR/registry.log"
        fi
        sleep 0.5
    done
}

ensure_registry() {
    local conf_state pid
    if ((CHECK_ONLY)); then
        config_matches "$ENV_DIR/registry.yml" "$REGISTRY_CONF" ||
            not_ready "registry config" "$REGISTRY_CONF differs from scripts/env/registry.yml"
        if registry_ok; then say "registry: answering on $REGISTRY"
        else not_ready registry "http://$REGISTRY/v2/ does not answer"; fi
        return
    fi

    conf_state=$(install_config "$ENV_DIR/registry.yml" "$REGISTRY_CONF")
    say "registry config: $conf_state ($REGISTRY_CONF)"
    if registry_ok; then
        # Restart our own registry so a changed config takes effect.
        if [[ $conf_state != unchanged ]] && pid=$(registry_pid); then
            stop_pid "$pid" 10
            start_registry
            say "registry: restarted with new config on $REGISTRY"
        else
            say "registry: already running on $REGISTRY"
        fi
        return
    fi
    start_registry
    say "registry: started on $REGISTRY (log $LOG_DIR/registry.log)"
}

# ------------------------------------------------------- 4. podman config

ensure_podman_config() {
    local src dst pair
    for pair in "containers.conf:$PODMAN_CONF" "registries.conf:$PODMAN_REGISTRIES"; do
        src="$ENV_DIR/${pair%%:*}" dst="${pair#*:}"
        if ((CHECK_ONLY)); then
            if config_matches "$src" "$dst"; then say "podman config: $dst in place"
            else not_ready "podman config" "$dst missing or differs from scripts/env/${pair%%:*}"; fi
        else
            say "podman config: $(install_config "$src" "$dst") ($dst)"
        fi
    done
}

# ------------------------------------------------------- 5. base image

# The apt mirror this machine uses for Debian itself (not -security).
debian_mirror() {
    local uri
    uri=$(
        {
            # deb822 .sources: first URI of a stanza whose Suites has $SUITE
            for f in /etc/apt/sources.list.d/*.sources; do
                [[ -f $f ]] || continue
                awk -v suite="$SUITE" '
                    /^[[:space:]]*#/ {next}
                    /^[[:space:]]*$/ { if (uri && ok) {print uri; done=1; exit} uri=""; ok=0; next }
                    tolower($1)=="uris:"   { uri=$2 }
                    tolower($1)=="suites:" { for (i=2;i<=NF;i++) if ($i==suite) ok=1 }
                    END { if (!done && uri && ok) print uri }' "$f"
            done
            # one-line format: deb [opts] URI SUITE components
            cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
                sed -nE "s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+)[[:space:]]+${SUITE}[[:space:]].*/\2/p"
        } | head -n1
    ) || true   # missing files / closed pipe are fine: fall back below
    echo "${uri:-http://deb.debian.org/debian}"
}

ROOTFS=""
cleanup_rootfs() {
    [[ -n $ROOTFS && -d $ROOTFS ]] || return 0
    # debootstrap mounts proc/sys inside the target; if it died midway those
    # mounts must go before rm -rf, or rm would walk into them.
    local m
    awk -v r="$ROOTFS" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf --one-file-system "$ROOTFS"
    ROOTFS=""
}

# debootstrap_image SUITE IMAGE TITLE LOG: a minbase Debian SUITE with python3 and venv, trimmed
# and imported as IMAGE (both the test base image and the site base image are made this way).
debootstrap_image() {
    local suite=$1 image=$2 title=$3 log=$4 mirror
    mirror=$(debian_mirror)
    ROOTFS=$(mktemp -d /var/tmp/airgap-rootfs.XXXXXX)
    trap cleanup_rootfs EXIT
    say "$title: debootstrap $suite from $mirror (log $log) ..."
    debootstrap --variant=minbase --include=python3,python3-venv \
        "$suite" "$ROOTFS" "$mirror" </dev/null >>"$log" 2>&1 || {
        tail -n 20 "$log" >&2
        die "debootstrap $suite failed; see $log"
    }

    # Trim what an image does not need: apt lists/caches, logs, the build
    # host's identity, and /dev (every runtime mounts its own).
    (
        cd "$ROOTFS"
        rm -rf var/lib/apt/lists/* var/cache/apt/*.bin \
            var/cache/apt/archives/*.deb var/cache/apt/archives/partial/* \
            var/cache/debconf/*-old var/lib/dpkg/*-old \
            var/log/* tmp/* var/tmp/* dev/*
        mkdir -p var/lib/apt/lists/partial
        rm -f etc/hostname
        : >etc/resolv.conf
    )

    tar --numeric-owner --xattrs -C "$ROOTFS" -c . |
        docker import \
            --change 'CMD ["/usr/bin/python3"]' \
            --change 'ENV LANG=C.UTF-8' \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV PYTHONUNBUFFERED=1' \
            --change "LABEL org.opencontainers.image.title=airgap-${title// /-} org.opencontainers.image.description=debootstrap-minbase-$suite-python3" \
            --message "debootstrap --variant=minbase --include=python3,python3-venv $suite $mirror" \
            - "$image" >/dev/null
    cleanup_rootfs
    trap - EXIT
}

build_base_image() {
    local started=$SECONDS
    debootstrap_image "$SUITE" "$BASE_IMAGE" "python base" "$LOG_DIR/debootstrap.log"
    say "base image: built $BASE_IMAGE in $((SECONDS - started)) s"
}

push_base_image() {
    docker push "$BASE_IMAGE" >>"$LOG_DIR/docker-push.log" 2>&1 || {
        tail -n 20 "$LOG_DIR/docker-push.log" >&2
        die "docker push $BASE_IMAGE failed"
    }
}

ensure_base_image() {
    local reg_digest engine_has=0 repo_digest
    reg_digest=$(registry_digest)
    docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 && engine_has=1
    repo_digest=$(engine_repo_digest)

    if ((CHECK_ONLY)); then
        [[ -n $reg_digest ]] || not_ready "base image" "registry has no $BASE_REPO:$BASE_TAG"
        ((engine_has)) || not_ready "base image" "docker engine has no $BASE_IMAGE"
        if [[ -n $reg_digest ]] && ((engine_has)); then
            if [[ $repo_digest == *"@$reg_digest" ]]; then
                say "base image: $BASE_IMAGE@$reg_digest in registry and engine"
            else
                not_ready "base image" "engine copy differs from registry ($reg_digest)"
            fi
        fi
        return
    fi

    mkdir -p "$LOG_DIR"
    if [[ -n $reg_digest ]] && ((engine_has)); then
        if [[ $repo_digest == *"@$reg_digest" ]]; then
            say "base image: already built and pushed"
        else
            # The registry is the source of truth; resync the engine.
            docker pull -q "$BASE_IMAGE" >/dev/null
            say "base image: engine copy differed from registry, pulled"
        fi
    elif ((engine_has)); then
        push_base_image
        say "base image: registry lost it, pushed from engine"
    elif [[ -n $reg_digest ]]; then
        docker pull -q "$BASE_IMAGE" >/dev/null
        say "base image: engine lost it, pulled from registry"
    else
        build_base_image
        push_base_image
        say "base image: pushed to $REGISTRY"
    fi
    reg_digest=$(registry_digest)
    [[ -n $reg_digest ]] || die "registry does not list $BASE_IMAGE after push"
    say "base image: digest $BASE_IMAGE@$reg_digest"
}

# --------------------------------------------- 5b. site base image (bullseye)

# The site image's registry digest, empty if the registry does not have it.
site_registry_digest() {
    curl -fsS --max-time 10 -o /dev/null -D - "${MANIFEST_ACCEPT[@]}" \
        "http://$REGISTRY/v2/$SITE_REPO/manifests/$SITE_SUITE" 2>/dev/null |
        tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}' || true
}

# The same recipe for SITE_SUITE; the bookworm mirror serves bullseye too.
build_site_base_image() {
    local started=$SECONDS
    debootstrap_image "$SITE_SUITE" "$SITE_IMAGE" "site base" "$LOG_DIR/debootstrap-$SITE_SUITE.log"
    say "site base image: built $SITE_IMAGE in $((SECONDS - started)) s"
}

# Built only when neither the registry nor the engine has it; otherwise the copies are resynced.
ensure_site_base_image() {
    local reg_digest engine_has=0
    reg_digest=$(site_registry_digest)
    docker image inspect "$SITE_IMAGE" >/dev/null 2>&1 && engine_has=1
    if ((CHECK_ONLY)); then
        [[ -n $reg_digest ]] || not_ready "site base image" "registry has no $SITE_REPO:$SITE_SUITE"
        ((engine_has)) || not_ready "site base image" "docker engine has no $SITE_IMAGE"
        [[ -z $reg_digest ]] || ((!engine_has)) || say "site base image: $SITE_IMAGE@$reg_digest"
        return
    fi
    mkdir -p "$LOG_DIR"
    if [[ -n $reg_digest ]] && ((engine_has)); then
        say "site base image: already built and pushed"
    elif [[ -n $reg_digest ]]; then
        docker pull -q "$SITE_IMAGE" >/dev/null
        say "site base image: engine lost it, pulled from registry"
    else
        ((engine_has)) || build_site_base_image
        docker push "$SITE_IMAGE" >>"$LOG_DIR/docker-push.log" 2>&1 || {
            tail -n 20 "$LOG_DIR/docker-push.log" >&2
            die "docker push $SITE_IMAGE failed"
        }
        say "site base image: pushed to $REGISTRY"
    fi
    reg_digest=$(site_registry_digest)
    [[ -n $reg_digest ]] || die "registry does not list $SITE_IMAGE after push"
    say "site base image: digest $SITE_IMAGE@$reg_digest"
}

# ----------------------------------------------- 6. openssl test image

# The base image digest the openssl image was built FROM (its label), empty if none.
openssl_image_base() {
    docker image inspect --format '{{index .Config.Labels "io.airgap.base.digest"}}' \
        "$OPENSSL_IMAGE" 2>/dev/null || true
}

# FROM the base image by digest; the network is used by apt only, and apt's lists are dropped again.
build_openssl_image() {
    local base_digest=$1 ctx started=$SECONDS
    ctx=$(mktemp -d /var/tmp/airgap-openssl.XXXXXX)
    cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $REGISTRY/$BASE_REPO@$base_digest
RUN apt-get update -q \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openssl \\
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb /var/log/* \\
    && mkdir -p /var/lib/apt/lists/partial
LABEL org.opencontainers.image.title=airgap-python-openssl io.airgap.base.digest=$base_digest
DOCKERFILE
    say "openssl image: building $OPENSSL_IMAGE (log $LOG_DIR/docker-build.log) ..."
    if ! docker build --network host -t "$OPENSSL_IMAGE" "$ctx" \
        </dev/null >>"$LOG_DIR/docker-build.log" 2>&1; then
        rm -rf "$ctx"
        tail -n 20 "$LOG_DIR/docker-build.log" >&2
        die "docker build $OPENSSL_IMAGE failed; see $LOG_DIR/docker-build.log"
    fi
    rm -rf "$ctx"
    push_openssl_image
    say "openssl image: built and pushed in $((SECONDS - started)) s"
}

push_openssl_image() {
    docker push "$OPENSSL_IMAGE" >>"$LOG_DIR/docker-push.log" 2>&1 || {
        tail -n 20 "$LOG_DIR/docker-push.log" >&2
        die "docker push $OPENSSL_IMAGE failed"
    }
}

ensure_openssl_image() {
    local base_digest reg_digest engine_has=0
    base_digest=$(registry_digest)
    reg_digest=$(registry_digest "$OPENSSL_REPO")
    docker image inspect "$OPENSSL_IMAGE" >/dev/null 2>&1 && engine_has=1

    if ((CHECK_ONLY)); then
        if [[ -n $reg_digest ]] && ((engine_has)) && [[ $(openssl_image_base) == "$base_digest" ]]; then
            say "openssl image: $OPENSSL_IMAGE@$reg_digest in registry and engine"
        else
            not_ready "openssl image" "$OPENSSL_IMAGE missing, or not built from the current base image"
        fi
        return
    fi

    mkdir -p "$LOG_DIR"
    if ((!engine_has)) && [[ -n $reg_digest ]]; then
        docker pull -q "$OPENSSL_IMAGE" >/dev/null
        engine_has=1
        say "openssl image: engine lost it, pulled from registry"
    fi
    # Built from an older base image (or never built): build it again.
    if ((!engine_has)) || [[ $(openssl_image_base) != "$base_digest" ]]; then
        build_openssl_image "$base_digest"
    elif [[ -n $reg_digest && $(engine_repo_digest "$OPENSSL_REPO") == *"@$reg_digest" ]]; then
        say "openssl image: already built and pushed"
    else
        push_openssl_image
        say "openssl image: registry lost it, pushed from engine"
    fi
}

# ------------------------------------------------- smoke tests (both modes)

readonly KUBE_YAML="$RUN_DIR/kube-selftest.yaml"

write_kube_yaml() {
    mkdir -p "$RUN_DIR"
    cat >"$KUBE_YAML" <<EOF
apiVersion: apps/v1
kind: Deployment
metadata:
  name: airgap-selftest
spec:
  replicas: 1
  selector:
    matchLabels:
      app: airgap-selftest
  template:
    metadata:
      labels:
        app: airgap-selftest
    spec:
      containers:
        - name: main
          image: $BASE_IMAGE
          command: ["python3", "-c", "import time; time.sleep(5)"]
EOF
}

verify_runtimes() {
    local out
    if out=$(docker run --rm --network none --read-only "$BASE_IMAGE" \
        python3 -c 'import sys, venv; print(sys.version.split()[0])' 2>&1); then
        say "docker run: ok (python $out, read-only rootfs, no network)"
    else
        not_ready "docker run" "$out"
    fi

    if ! out=$(podman info --format '{{.Version.Version}}' 2>&1); then
        not_ready "podman info" "$out"; return
    fi
    say "podman info: ok ($(podman info --format 'podman {{.Version.Version}}, cgroups {{.Host.CgroupManager}}, events {{.Host.EventLogger}}, network {{.Host.NetworkBackend}}, storage {{.Store.GraphDriverName}}, runtime {{.Host.OCIRuntime.Name}}'))"

    # Podman has its own image store: keep its copy of the base image in
    # step with the registry (this also proves the insecure-registry drop-in).
    local want have
    want=$(registry_digest)
    have=$(podman image inspect --format '{{.Digest}}' "$BASE_IMAGE" 2>/dev/null || true)
    if [[ -n $want && $have == "$want" ]]; then
        say "podman image: already up to date"
    elif ((CHECK_ONLY)); then
        not_ready "podman image" "podman has no up-to-date $BASE_IMAGE"; return
    elif podman pull -q "$BASE_IMAGE" >/dev/null 2>>"$LOG_DIR/podman-pull.log"; then
        say "podman image: pulled $BASE_IMAGE"
    else
        not_ready "podman image" "podman pull $BASE_IMAGE failed, see $LOG_DIR/podman-pull.log"
        return
    fi

    # Throwaway containers/pods only; nothing is left behind.
    if out=$(podman run --rm --pull never --network none "$BASE_IMAGE" python3 -c 'print(1)' 2>&1) &&
        [[ $out == 1 ]]; then
        say "podman run: ok"
    else
        not_ready "podman run" "$out"
    fi

    write_kube_yaml
    if out=$(podman kube play --network none "$KUBE_YAML" 2>&1); then
        if out=$(podman kube down "$KUBE_YAML" 2>&1); then
            say "podman kube play/down: ok"
        else
            not_ready "podman kube down" "$out"
        fi
    else
        podman kube down "$KUBE_YAML" >/dev/null 2>&1 || true
        not_ready "podman kube play" "$out"
    fi
}

# ------------------------------------------- 7. Kubernetes test cluster

# The single-node Kubernetes 1.20.2 the kubernetes tests run on (scripts/cluster.sh): its binaries
# from the machine's cache, else the pinned tarball beside the clone, else built from Debian's
# source package (scripts/k8s/binaries.sh, ~15 min once per machine); `start` is a no-op when it
# already runs.
ensure_cluster() {
    local cluster="$ENV_DIR/../cluster.sh" t0=$SECONDS
    if bash "$cluster" status >/dev/null 2>&1; then
        say "kubernetes test cluster: running ($(bash "$cluster" env))"
        return 0
    fi
    if ((CHECK_ONLY)); then
        not_ready "kubernetes test cluster" "not running; bash scripts/cluster.sh start"
        return 0
    fi
    # --fresh: what a stopped cluster held (workloads of earlier runs) is of no use to the tests.
    say "kubernetes test cluster: starting"
    if bash "$cluster" start --fresh >/dev/null; then
        say "kubernetes test cluster: started in $((SECONDS - t0)) s ($(bash "$cluster" env))"
    else
        not_ready "kubernetes test cluster" "scripts/cluster.sh start failed (see its output above)"
    fi
}

# ------------------------------------------------------------------- main

main() {
    case "${1:-}" in
        "") ;;
        --check) CHECK_ONLY=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    [[ $(id -u) == 0 ]] || die "must run as root"

    ensure_packages
    # Without the packages nothing below can be checked meaningfully.
    if ((NOT_READY)); then say "environment NOT ready"; exit 1; fi

    ensure_docker
    ((NOT_READY)) || check_docker_cli
    ensure_registry
    ensure_podman_config
    if ((NOT_READY)); then say "environment NOT ready"; exit 1; fi

    ensure_base_image
    if ((NOT_READY)); then say "environment NOT ready"; exit 1; fi
    ensure_site_base_image
    if ((NOT_READY)); then say "environment NOT ready"; exit 1; fi
    ensure_openssl_image
    if ((NOT_READY)); then say "environment NOT ready"; exit 1; fi
    verify_runtimes
    if ((NOT_READY)); then say "environment NOT ready"; exit 1; fi
    ensure_cluster
    if ((NOT_READY)); then say "environment NOT ready"; exit 1; fi

    say "environment ready: docker $(docker version --format '{{.Server.Version}}'), registry $REGISTRY, podman $(podman version --format '{{.Client.Version}}'), base image $BASE_IMAGE@$(registry_digest)"
}

main "$@"
