#!/usr/bin/env bash
# cluster.sh - start/stop the single-node Kubernetes 1.20.2 cluster the tests
# run on: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kube-proxy (iptables mode) and kubelet (dockershim on the local Docker
# Engine), all as plain background processes of root, on loopback.
# The binaries come from scripts/k8s/binaries.sh (cache, pinned tarball, or a
# build from Debian's source package). docs/install.md says what it proves.
#
#   cluster.sh start  [--bin DIR] [--state DIR] [--timeout SECONDS] [--fresh]
#                     prints the kubeconfig path; a no-op when already running
#   cluster.sh stop   [--state DIR] [--purge]
#   cluster.sh status [--state DIR]   exit 0 running, 1 partly running, 3 stopped
#   cluster.sh env    [--state DIR]   prints "export KUBECONFIG=..."
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
K8S_DIR="$SCRIPT_DIR/k8s"
STATE=${AIRGAP_TEST_K8S_STATE:-/var/lib/airgap-test-k8s}
BIN_OPT=""
TIMEOUT=120
PURGE=0
FRESH=0

# Fixed network layout; edit here if it collides with something on the host.
POD_CIDR=10.244.0.0/24       # one node, one /24 (host-local IPAM)
POD_GW=10.244.0.1            # bridge address; pods reach the host here
SVC_CIDR=10.96.0.0/12
SVC_API_IP=10.96.0.1         # ClusterIP of the "kubernetes" Service
BRIDGE=airgapk8s0
PAUSE_IMAGE=k8s.gcr.io/pause:3.2
API_PORT=6443
PORTS=(2379 2380 "$API_PORT" 10248 10249 10250 10256)
# Start order; stop goes the other way round.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet)
# Kernel settings kubelet / kube-proxy / the CNI bridge may change; saved at
# start and put back at stop.
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
         kernel.keys.root_maxkeys kernel.keys.root_maxbytes
         net.ipv4.conf.all.route_localnet net.ipv4.ip_forward)

log() { printf '[cluster.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() {
  awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "${BASH_SOURCE[0]}"
  exit "${1:-0}"
}

set_paths() {
  STATE=$(realpath -m "$STATE")
  RUN=$STATE/run
  LOGS=$STATE/logs
  PKI=$STATE/pki
  KUBECONFIG_ADMIN=$STATE/kubeconfig
}

need_root() { [[ $(id -u) == 0 ]] || die "must run as root"; }

# ---------------------------------------------------------------- processes

# Print the PID from $RUN/<name>.pid if that process is alive and is <name>.
alive_pid() {
  local f="$RUN/$1.pid" pid exe
  [[ -r $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
  exe=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | sed -n 1p) || return 1
  [[ ${exe##*/} == "$1" ]] || return 1
  echo "$pid"
}

# launch NAME CMD... : run CMD in its own session, log to $LOGS/NAME.log.
launch() {
  local name=$1 i
  shift
  rm -f "$RUN/$name.pid"
  printf '\n===== %s: %s\n' "$(date -Is)" "$*" >>"$LOGS/$name.log"
  # The inner shell writes its own PID, then execs CMD under that PID.
  # shellcheck disable=SC2016
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$RUN/$name.pid" "$@" \
    >>"$LOGS/$name.log" 2>&1 </dev/null 9>&- &
  for i in $(seq 100); do
    alive_pid "$name" >/dev/null && return 0
    [[ $i == 100 ]] || sleep 0.05
  done
  die "$name did not start; see $LOGS/$name.log"
}

# wait_until SECONDS WHAT COMPONENT CMD... : poll CMD until it succeeds.
wait_until() {
  local secs=$1 what=$2 comp=$3 deadline
  shift 3
  deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ! alive_pid "$comp" >/dev/null; then
      tail -n 25 "$LOGS/$comp.log" >&2 || true
      die "$comp exited while waiting for $what (log: $LOGS/$comp.log)"
    fi
    ((SECONDS < deadline)) || die "timed out after ${secs}s waiting for $what"
    sleep 0.5
  done
}

running_count() {
  local c n=0
  for c in "${COMPONENTS[@]}"; do
    if alive_pid "$c" >/dev/null; then n=$((n + 1)); fi
  done
  echo "$n"
}

expected_count() {
  if [[ -f $RUN/no-kube-proxy ]]; then echo $((${#COMPONENTS[@]} - 1)); else echo "${#COMPONENTS[@]}"; fi
}

# ---------------------------------------------------------------- packages

apt_install() {
  local -a pkgs=("$@")
  [[ ${#pkgs[@]} -gt 0 ]] || return 0
  log "installing from Debian: ${pkgs[*]}"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2; then
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2
  fi
  printf '%s %s\n' "$(date -Is)" "${pkgs[*]}" >>"$STATE/apt-installed.txt"
}

ensure_packages() {
  local -a pkgs=()
  [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] ||
    pkgs+=(containernetworking-plugins)
  command -v socat >/dev/null || pkgs+=(socat)          # kubectl port-forward
  command -v nsenter >/dev/null || pkgs+=(util-linux)
  command -v conntrack >/dev/null || pkgs+=(conntrack)  # kube-proxy (UDP services)
  command -v iptables >/dev/null || pkgs+=(iptables)
  command -v openssl >/dev/null || pkgs+=(openssl)
  command -v curl >/dev/null || pkgs+=(curl)
  command -v kubectl >/dev/null || pkgs+=(kubernetes-client)
  if ! docker image inspect "$PAUSE_IMAGE" >/dev/null 2>&1; then
    command -v gcc >/dev/null || pkgs+=(gcc)
    dpkg-query -W -f='${Status}' libc6-dev 2>/dev/null | grep -q 'ok installed' || pkgs+=(libc6-dev)
  fi
  apt_install "${pkgs[@]}"
}

# etcd: use one on PATH, else Debian's etcd-server unpacked into the state
# dir (apt-get install would register, and on hosts without a denying
# policy-rc.d also start, a system etcd service on the same port).
ensure_etcd() {
  if command -v etcd >/dev/null; then
    ETCD=$(command -v etcd)
  else
    ETCD=$STATE/etcd-server/usr/bin/etcd
    if [[ ! -x $ETCD ]]; then
      log "fetching Debian etcd-server (apt-get download) into $STATE/debs"
      mkdir -p "$STATE/debs"
      if ! (cd "$STATE/debs" && apt-get download -q etcd-server >&2); then
        apt-get update -q >&2
        (cd "$STATE/debs" && apt-get download -q etcd-server >&2)
      fi
      local deb
      for deb in "$STATE"/debs/etcd-server_*.deb; do :; done
      dpkg-deb -x "$deb" "$STATE/etcd-server"
    fi
  fi
  [[ -x $ETCD ]] || die "no etcd binary"
}

resolve_bins() {
  local b
  if [[ -n $BIN_OPT ]]; then
    BIN=$(cd "$BIN_OPT" && pwd)
  else
    BIN=$(bash "$K8S_DIR/binaries.sh") || die "Kubernetes binaries not ready (scripts/k8s/binaries.sh failed)"
  fi
  for b in kube-apiserver kube-controller-manager kube-scheduler kubelet; do
    [[ -x $BIN/$b ]] || die "$BIN/$b missing"
  done
  rm -f "$RUN/no-kube-proxy"
  if [[ ! -x $BIN/kube-proxy ]]; then
    log "WARNING: no kube-proxy in $BIN: ClusterIP/NodePort Services will not be routed"
    touch "$RUN/no-kube-proxy"
  fi
}

ensure_pause_image() {
  docker image inspect "$PAUSE_IMAGE" >/dev/null 2>&1 && return 0
  local d=$STATE/pause-build
  log "building $PAUSE_IMAGE from $K8S_DIR/pause.c"
  rm -rf "$d"
  mkdir -p "$d"
  gcc -Os -Wall -Werror -static -DVERSION=3.2-airgap -o "$d/pause" "$K8S_DIR/pause.c"
  printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$d/Dockerfile"
  docker build -q -t "$PAUSE_IMAGE" "$d" >/dev/null
  touch "$STATE/pause-image-built"
  rm -rf "$d"
}

check_ports() {
  local p
  for p in "${PORTS[@]}"; do
    if [[ -n $(ss -Hltn "sport = :$p") ]]; then
      ss -Hltnp "sport = :$p" >&2 || true
      die "TCP port $p is already in use"
    fi
  done
}

# ---------------------------------------------------------------- config

write_kubeconfig() { # FILE USER TOKEN
  local ca
  ca=$(base64 -w0 <"$PKI/ca.crt")
  (umask 077; cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: airgap-test-k8s
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $ca
users:
- name: $2
  user:
    token: $3
contexts:
- name: airgap-test-k8s
  context:
    cluster: airgap-test-k8s
    user: $2
current-context: airgap-test-k8s
EOF
  )
}

sign_cert() { # NAME SUBJECT EXTENSIONS
  openssl genrsa -out "$PKI/$1.key" 2048 2>/dev/null
  openssl req -new -config "$PKI/openssl.cnf" -key "$PKI/$1.key" -subj "$2" -out "$PKI/$1.csr"
  openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -set_serial "0x$(openssl rand -hex 12)" -days 3650 -sha256 \
    -extfile "$PKI/openssl.cnf" -extensions "$3" -out "$PKI/$1.crt" 2>/dev/null
  rm -f "$PKI/$1.csr"
}

# Node name = hostname; the API server reaches the kubelet by that name, so
# the kubelet listens on the first IPv4 address the name resolves to.
pick_node() {
  if [[ -s $STATE/node-name ]]; then
    NODE=$(<"$STATE/node-name")
  else
    NODE=$(hostname | tr '[:upper:]' '[:lower:]')
    echo "$NODE" >"$STATE/node-name"
  fi
  KUBELET_ADDR=$(getent ahostsv4 "$NODE" | awk 'NR == 1 {print $1}')
  [[ -n $KUBELET_ADDR ]] || die "node name '$NODE' does not resolve; add it to /etc/hosts"
}

gen_config() {
  local t_admin t_kcm t_sched t_proxy t_node
  mkdir -p "$PKI" "$STATE/cni/net.d" "$STATE/cni/ipam" "$STATE/cni/cache" "$STATE/kubelet"
  chmod 700 "$PKI"
  if [[ ! -s $PKI/ca.crt ]]; then
    log "generating CA, certificates, tokens and kubeconfigs in $STATE"
    cat >"$PKI/openssl.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, DNS:$NODE, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local, IP:127.0.0.1, IP:$POD_GW, IP:$SVC_API_IP
[v3_client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
EOF
    (
      umask 077
      openssl genrsa -out "$PKI/ca.key" 2048 2>/dev/null
      openssl req -x509 -new -config "$PKI/openssl.cnf" -extensions v3_ca -key "$PKI/ca.key" \
        -subj "/CN=airgap-test-k8s-ca" -days 3650 -sha256 -out "$PKI/ca.crt"
      sign_cert apiserver "/CN=kube-apiserver" v3_server
      sign_cert kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" v3_client
      openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
      openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
    )
    t_admin=$(openssl rand -hex 16)
    t_kcm=$(openssl rand -hex 16)
    t_sched=$(openssl rand -hex 16)
    t_proxy=$(openssl rand -hex 16)
    t_node=$(openssl rand -hex 16)
    (umask 077; cat >"$STATE/tokens.csv" <<EOF
$t_admin,admin,admin,system:masters
$t_kcm,system:kube-controller-manager,system:kube-controller-manager
$t_sched,system:kube-scheduler,system:kube-scheduler
$t_proxy,system:kube-proxy,system:kube-proxy
$t_node,system:node:$NODE,system:node:$NODE,system:nodes
EOF
    )
    write_kubeconfig "$KUBECONFIG_ADMIN" admin "$t_admin"
    write_kubeconfig "$STATE/controller-manager.kubeconfig" system:kube-controller-manager "$t_kcm"
    write_kubeconfig "$STATE/scheduler.kubeconfig" system:kube-scheduler "$t_sched"
    write_kubeconfig "$STATE/kube-proxy.kubeconfig" system:kube-proxy "$t_proxy"
    write_kubeconfig "$STATE/kubelet.kubeconfig" "system:node:$NODE" "$t_node"
  fi

  cat >"$STATE/cni/net.d/10-airgap-test-k8s.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "airgap-test-k8s",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$STATE/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GW"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF

  cat >"$STATE/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $KUBELET_ADDR
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: AlwaysAllow}
cgroupDriver: $CGROUP_DRIVER
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
oomScoreAdj: 0
# Never garbage-collect or evict images/pods for disk pressure: the images on
# this host are not the cluster's to delete.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi"}
clusterDomain: cluster.local
rotateCertificates: false
serializeImagePulls: false
# Re-check node status every 2s (posted only on change) so "Ready" shows up
# ~2s after the runtime is up rather than after the default 10s.
nodeStatusUpdateFrequency: 2s
EOF
}

# ---------------------------------------------------------------- host state

save_sysctls() {
  [[ -s $RUN/sysctl.saved ]] && return 0
  local k f
  for k in "${SYSCTLS[@]}"; do
    f=/proc/sys/${k//./\/}
    if [[ -r $f ]]; then printf '%s %s\n' "$f" "$(<"$f")"; fi
  done >"$RUN/sysctl.saved.tmp"
  mv "$RUN/sysctl.saved.tmp" "$RUN/sysctl.saved"
}

restore_sysctls() {
  [[ -s $RUN/sysctl.saved ]] || return 0
  local f v
  while read -r f v; do
    [[ $(<"$f") == "$v" ]] || echo "$v" >"$f" || log "WARNING: could not restore $f=$v"
  done <"$RUN/sysctl.saved"
  rm -f "$RUN/sysctl.saved"
}

setup_bridge() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  ip addr replace "$POD_GW/${POD_CIDR#*/}" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Lets the host reach ClusterIPs even without a default route.
  ip route replace "$SVC_CIDR" dev "$BRIDGE" src "$POD_GW"
  # Paths kubelet 1.20 uses whatever --root-dir says: note what is there now,
  # stop removes what was added.
  local d
  for d in /var/log/pods /var/log/containers; do
    if [[ -d $d ]]; then
      ls -1A "$d" >"$RUN/preexisting${d//\//-}"
    else
      : >"$RUN/created${d//\//-}"
    fi
  done
  [[ -d /var/lib/kubelet ]] || touch "$RUN/created-var-lib-kubelet"
  [[ -d /var/lib/kubelet/device-plugins ]] || touch "$RUN/created-device-plugins"
}

# Delete every iptables rule/chain named KUBE-* (made by kubelet and
# kube-proxy); nothing else on the host is touched.
cleanup_iptables() {
  local ipt t rules chains c
  for ipt in iptables ip6tables; do
    command -v "$ipt-save" >/dev/null || continue
    for t in nat filter mangle; do
      rules=$("$ipt-save" -t "$t" 2>/dev/null) || continue
      chains=$(grep -oE '^:KUBE-[A-Za-z0-9_-]+' <<<"$rules" | cut -c2- || true)
      [[ -n $chains ]] || continue
      {
        echo "*$t"
        grep -E '^-A (PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) .*-j KUBE-' <<<"$rules" |
          sed 's/^-A /-D /' || true
        for c in $chains; do echo "-F $c"; done
        for c in $chains; do echo "-X $c"; done
        echo COMMIT
      } | "$ipt-restore" -w --noflush || log "WARNING: could not remove $ipt $t KUBE-* chains"
    done
  done
}

# Pod log dirs/symlinks kubelet wrote under /var/log (all stale once the pod
# containers are gone), then kubelet's files under /var/lib/kubelet.
remove_pod_logs() {
  local d tag e
  for d in /var/log/pods /var/log/containers; do
    tag=${d//\//-}
    if [[ -f $RUN/created$tag ]]; then
      rm -rf "$d"
    elif [[ -f $RUN/preexisting$tag && -d $d ]]; then
      while IFS= read -r e; do
        grep -qxF -- "$e" "$RUN/preexisting$tag" || rm -rf "${d:?}/$e"
      done < <(ls -1A "$d")
    fi
    rm -f "$RUN/created$tag" "$RUN/preexisting$tag"
  done
  # kubelet's device-plugin socket (path hard-coded in 1.20).
  rm -f /var/lib/kubelet/device-plugins/kubelet.sock
  if [[ -f $RUN/created-device-plugins ]]; then
    rm -f /var/lib/kubelet/device-plugins/DEPRECATION
    rmdir /var/lib/kubelet/device-plugins 2>/dev/null || true
  fi
  if [[ -f $RUN/created-var-lib-kubelet ]]; then rmdir /var/lib/kubelet 2>/dev/null || true; fi
  rm -f "$RUN"/created-*
}

do_stop() {
  local c pid i ids m
  local -a rev=()
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do rev+=("${COMPONENTS[i]}"); done
  for c in "${rev[@]}"; do
    if pid=$(alive_pid "$c"); then
      kill -TERM "$pid" 2>/dev/null || true
      for i in $(seq 100); do
        alive_pid "$c" >/dev/null || break
        if [[ $i == 100 ]]; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; fi
        sleep 0.1
      done
      log "stopped $c (pid $pid)"
    fi
    rm -f "$RUN/$c.pid"
  done
  # kubelet volume mounts (secrets, tokens, emptyDir on tmpfs) under the state dir.
  while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" || log "WARNING: could not unmount $m"
  done < <(awk -v p="$STATE/" 'index($2, p) == 1 {print $2}' /proc/self/mounts | sort -r)
  # Host-wide clean-up only if this state dir's cluster got as far as touching
  # the host (so a start that fails on, say, a port held by another cluster
  # leaves that cluster's containers and iptables rules alone).
  [[ -f $RUN/host-touched ]] || return 0
  # Pod containers (dockershim names them k8s_<container>_<pod>_<ns>_<uid>_<n>).
  if command -v docker >/dev/null; then
    ids=$(docker ps -a --format '{{.ID}} {{.Names}}' 2>/dev/null | awk '$2 ~ /^k8s_/ {print $1}' || true)
    if [[ -n $ids ]]; then
      # shellcheck disable=SC2086
      docker rm -f -v $ids >/dev/null && log "removed $(wc -w <<<"$ids") pod container(s)"
    fi
  fi
  while read -r m; do # mounts of containers removed just now
    umount "$m" 2>/dev/null || umount -l "$m" || log "WARNING: could not unmount $m"
  done < <(awk -v p="$STATE/" 'index($2, p) == 1 {print $2}' /proc/self/mounts | sort -r)
  cleanup_iptables
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link del "$BRIDGE" && log "removed bridge $BRIDGE"
  fi
  restore_sysctls
  remove_pod_logs
  rm -rf "$STATE/cni/ipam" "$STATE/cni/cache" "$RUN/dockershim.sock"
  rm -f "$RUN/host-touched"
}

# ---------------------------------------------------------------- commands

kubectl_admin() { kubectl --kubeconfig "$KUBECONFIG_ADMIN" --cache-dir "$STATE/kubectl-cache" "$@"; }

# Ready=True reported by *this* kubelet (a restarted cluster still has the old
# node status in etcd) and the not-ready/unreachable taints are gone, so the
# scheduler will place pods right away.
node_ready() {
  local out st hb taints
  out=$(kubectl_admin get node "$NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastHeartbeatTime} {.spec.taints[*].key}')
  read -r st hb taints <<<"$out"
  [[ $st == True && ! $hb < $KUBELET_STARTED ]] || return 1
  [[ $taints != *node.kubernetes.io/not-ready* && $taints != *node.kubernetes.io/unreachable* ]]
}

default_sa_ready() {
  [[ -n $(kubectl_admin -n default get serviceaccount default -o 'jsonpath={.secrets[0].name}') ]]
}

api_ready() {
  local tok
  tok=$(awk -F, '$2 == "admin" {print $1}' "$STATE/tokens.csv")
  [[ $(curl -fsS --max-time 2 --cacert "$PKI/ca.crt" -H "Authorization: Bearer $tok" \
        "https://127.0.0.1:$API_PORT/readyz") == ok ]]
}

etcd_ready() { curl -fsS --max-time 2 http://127.0.0.1:2379/health | grep -q '"health":"true"'; }

STARTING=0
on_exit() {
  local rc=$?
  if ((STARTING && rc != 0)); then
    if [[ -n ${KEEP_ON_FAILURE:-} ]]; then
      log "start failed; KEEP_ON_FAILURE set, leaving processes running (logs in $LOGS)"
    else
      log "start failed; stopping what was started (logs in $LOGS)"
      do_stop || true
    fi
  fi
}

cmd_start() {
  local t0=$SECONDS
  need_root
  mkdir -p "$STATE" "$RUN" "$LOGS"
  chmod 700 "$STATE"
  touch "$STATE/.airgap-test-k8s"
  exec 9>"$STATE/.lock"
  flock -w 300 9 || die "another cluster.sh holds $STATE/.lock"
  if ((!FRESH)) && [[ -s $STATE/node-name ]] && (($(running_count) == $(expected_count))); then
    NODE=$(<"$STATE/node-name")
    log "already running (state $STATE)"
    echo "$KUBECONFIG_ADMIN"
    return 0
  fi
  # Clear whatever a previous, crashed or partial run left behind.
  do_stop
  if ((FRESH)); then
    log "--fresh: wiping cluster data (etcd, kubelet, dockershim dirs)"
    rm -rf "$STATE/etcd" "$STATE/kubelet" "$STATE/dockershim"
  fi

  docker info >/dev/null 2>&1 || die "Docker Engine is not running (needed: kubelet uses dockershim)"
  CGROUP_DRIVER=$(docker info --format '{{.CgroupDriver}}')
  STARTING=1
  ensure_packages
  resolve_bins
  ensure_etcd
  ensure_pause_image
  check_ports
  pick_node
  gen_config
  touch "$RUN/host-touched"
  save_sysctls
  setup_bridge

  log "starting etcd"
  launch etcd "$ETCD" --name=airgap-test-k8s --data-dir="$STATE/etcd" \
    --listen-client-urls=http://127.0.0.1:2379 --advertise-client-urls=http://127.0.0.1:2379 \
    --listen-peer-urls=http://127.0.0.1:2380 --initial-advertise-peer-urls=http://127.0.0.1:2380 \
    --initial-cluster=airgap-test-k8s=http://127.0.0.1:2380 --logger=zap --log-outputs=stderr
  wait_until 30 "etcd health" etcd etcd_ready
  log "etcd ready (+$((SECONDS - t0))s)"

  log "starting kube-apiserver"
  launch kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers=http://127.0.0.1:2379 \
    --bind-address=0.0.0.0 --secure-port="$API_PORT" --insecure-port=0 --advertise-address="$POD_GW" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" --token-auth-file="$STATE/tokens.csv" --anonymous-auth=false \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --service-cluster-ip-range="$SVC_CIDR" --allow-privileged=true \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --kubelet-client-certificate="$PKI/kubelet-client.crt" --kubelet-client-key="$PKI/kubelet-client.key" \
    --kubelet-preferred-address-types=Hostname --cert-dir="$PKI/apiserver-generated" --profiling=false
  wait_until 90 "kube-apiserver /readyz" kube-apiserver api_ready
  log "kube-apiserver ready (+$((SECONDS - t0))s)"

  log "starting kube-controller-manager, kube-scheduler, kube-proxy, kubelet"
  launch kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$STATE/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --port=0 --secure-port=0 --leader-elect=false \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --service-cluster-ip-range="$SVC_CIDR" --allocate-node-cidrs=false --profiling=false
  launch kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$STATE/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --port=0 --secure-port=0 --leader-elect=false --profiling=false
  if [[ ! -f $RUN/no-kube-proxy ]]; then
    launch kube-proxy "$BIN/kube-proxy" \
      --kubeconfig="$STATE/kube-proxy.kubeconfig" --hostname-override="$NODE" \
      --proxy-mode=iptables --cluster-cidr="$POD_CIDR" --masquerade-all=true \
      --oom-score-adj=0 --conntrack-max-per-core=0 \
      --conntrack-tcp-timeout-established=0 --conntrack-tcp-timeout-close-wait=0 \
      --healthz-bind-address=127.0.0.1:10256 --metrics-bind-address=127.0.0.1:10249 \
      --profiling=false
  fi
  KUBELET_STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  launch kubelet "$BIN/kubelet" \
    --config="$STATE/kubelet-config.yaml" --kubeconfig="$STATE/kubelet.kubeconfig" \
    --hostname-override="$NODE" --root-dir="$STATE/kubelet" --cert-dir="$STATE/kubelet/pki" \
    --seccomp-profile-root="$STATE/kubelet/seccomp" \
    --volume-plugin-dir="$STATE/kubelet-plugins/volume/exec" \
    --container-runtime=docker --container-runtime-endpoint="unix://$RUN/dockershim.sock" \
    --experimental-dockershim-root-directory="$STATE/dockershim" \
    --pod-infra-container-image="$PAUSE_IMAGE" \
    --network-plugin=cni --cni-bin-dir=/usr/lib/cni --cni-conf-dir="$STATE/cni/net.d" \
    --cni-cache-dir="$STATE/cni/cache" \
    --cgroups-per-qos=false --enforce-node-allocatable= --fail-swap-on=false

  wait_until "$TIMEOUT" "node $NODE Ready" kubelet node_ready
  log "node $NODE Ready (+$((SECONDS - t0))s)"
  wait_until 60 "default ServiceAccount token" kube-controller-manager default_sa_ready
  local c
  for c in "${COMPONENTS[@]}"; do
    [[ $c == kube-proxy && -f $RUN/no-kube-proxy ]] && continue
    alive_pid "$c" >/dev/null || die "$c exited during start-up (log: $LOGS/$c.log)"
  done
  STARTING=0
  log "cluster up in $((SECONDS - t0))s. export KUBECONFIG=$KUBECONFIG_ADMIN"
  echo "$KUBECONFIG_ADMIN"
}

cmd_stop() {
  need_root
  if [[ ! -d $STATE ]]; then log "nothing to stop ($STATE does not exist)"; return 0; fi
  [[ -f $STATE/.airgap-test-k8s ]] || die "$STATE is not a cluster.sh state directory"
  exec 9>"$STATE/.lock"
  flock -w 300 9 || die "another cluster.sh holds $STATE/.lock"
  mkdir -p "$RUN"
  do_stop
  if ((PURGE)); then
    if [[ -f $STATE/pause-image-built ]]; then
      docker rmi "$PAUSE_IMAGE" >/dev/null 2>&1 && log "removed image $PAUSE_IMAGE"
    fi
    rm -rf "$STATE"
    log "purged $STATE"
  fi
  log "stopped"
}

cmd_status() {
  local c pid n=0 want
  want=$(expected_count)
  for c in "${COMPONENTS[@]}"; do
    if [[ $c == kube-proxy && -f $RUN/no-kube-proxy ]]; then
      printf '%-24s not used\n' "$c"
    elif pid=$(alive_pid "$c"); then
      printf '%-24s running (pid %s)\n' "$c" "$pid"
      n=$((n + 1))
    else
      printf '%-24s stopped\n' "$c"
    fi
  done
  if ((n == want)); then
    kubectl_admin get nodes 2>/dev/null || true
    echo "KUBECONFIG=$KUBECONFIG_ADMIN"
    return 0
  fi
  ((n == 0)) && return 3
  return 1
}

# ---------------------------------------------------------------- main

CMD=${1:-}
[[ -n $CMD ]] || usage 2
shift
while [[ $# -gt 0 ]]; do
  case $1 in
    --bin) BIN_OPT=${2:?--bin needs a directory}; shift 2 ;;
    --state) STATE=${2:?--state needs a directory}; shift 2 ;;
    --timeout) TIMEOUT=${2:?--timeout needs seconds}; shift 2 ;;
    --purge) PURGE=1; shift ;;
    --fresh) FRESH=1; shift ;;
    -h | --help) usage 0 ;;
    *) die "unknown option $1" ;;
  esac
done
set_paths
trap on_exit EXIT

case $CMD in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) echo "export KUBECONFIG=$KUBECONFIG_ADMIN" ;;
  -h | --help | help) usage 0 ;;
  *) usage 2 ;;
esac
