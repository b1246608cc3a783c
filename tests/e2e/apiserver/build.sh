#!/usr/bin/env bash
# Build `crdapiserver` (a small wrapper around the real upstream k8s.io/apiextensions-apiserver:
# CRDs, custom resources, OpenAPI schema + CEL validation, status subresource, server-side apply,
# watch) and copy Debian's `etcd`, for the e2e tests.
#
# Offline-friendly: everything comes from the Debian archive the system already uses, suite sid,
# through a PRIVATE apt state (download-only + `dpkg -x`); the system's apt sources and installed
# packages are never touched. Needs apt-get, apt-cache and dpkg (any Debian), ~4 GB scratch disk,
# ~2.5 min on 2 cores.
#
# Output: $OUT/{crdapiserver,etcd} (default <repo>/.tools/apiserver/bin). The scratch folder
# ($ROOT, default <repo>/.tools/apiserver/build) is deleted after a successful build
# (KEEP_SCRATCH=1 keeps it). Any missing package or failed step fails the script.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
ROOT=${ROOT:-$REPO/.tools/apiserver/build}
OUT=${OUT:-$REPO/.tools/apiserver/bin}

T0=$SECONDS
took() { echo "build.sh: $1 ($((SECONDS - T0))s)"; T0=$SECONDS; }
for tool in apt-get apt-cache dpkg; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool is required (Debian)" >&2; exit 1; }
done

rm -rf "$ROOT"
mkdir -p "$ROOT"/apt/{lists/partial,cache/archives/partial} "$ROOT"/debs "$ROOT"/tree "$OUT" \
  "$ROOT"/gopath/src/crdapiserver

# The same Debian archive the system is configured with, suite sid.
MIRROR=$( (cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null || true) \
  | grep -oE '^URIs: *[^ ]+/debian$|^deb +[^ ]+/debian ' | awk 'NR == 1 {print $2}' || true)
[ -n "$MIRROR" ] || { echo "build.sh: no Debian archive configured in /etc/apt" >&2; exit 1; }
echo "deb $MIRROR sid main" > "$ROOT/apt/sources.list"
A=(-o "Dir::Etc::sourcelist=$ROOT/apt/sources.list" -o Dir::Etc::sourceparts=-
   -o "Dir::State::Lists=$ROOT/apt/lists" -o "Dir::Cache=$ROOT/apt/cache"
   -o Dir::State::status=/var/lib/dpkg/status -o APT::Sandbox::User=root)

echo "build.sh: apt-get update (private state, $MIRROR sid)"
apt-get "${A[@]}" update -qq

# Dependency closure of golang-k8s-apiextensions-apiserver-dev (all golang-*-dev, arch:all),
# plus the Go toolchain and etcd.
apt-cache "${A[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
  --no-replaces --no-enhances --no-pre-depends golang-k8s-apiextensions-apiserver-dev \
  | grep -E '^golang-.*-dev$' | sort -u > "$ROOT/godev.txt" || true
[ -s "$ROOT/godev.txt" ] || { echo "build.sh: golang-k8s-apiextensions-apiserver-dev not found in sid" >&2; exit 1; }
GOVER=$(apt-cache "${A[@]}" depends golang-go | grep -oE 'golang-1\.[0-9]+-go' | awk 'NR == 1 {sub(/-go$/, ""); print}' || true)
[ -n "$GOVER" ] || { echo "build.sh: cannot find the Go toolchain that golang-go depends on" >&2; exit 1; }
echo "build.sh: downloading $(wc -l < "$ROOT/godev.txt") Go source packages, ${GOVER}, etcd-server"
# shellcheck disable=SC2046
(cd "$ROOT/debs" && apt-get "${A[@]}" download -qq $(cat "$ROOT/godev.txt") "${GOVER}-go" "${GOVER}-src" etcd-server >/dev/null)
took "downloaded $(find "$ROOT/debs" -name '*.deb' | wc -l) packages"
for d in "$ROOT"/debs/*.deb; do dpkg -x "$d" "$ROOT/tree"; done
took "unpacked"

cp "$HERE/main.go" "$ROOT/gopath/src/crdapiserver/main.go"
export GOROOT="$ROOT/tree/usr/lib/go-${GOVER#golang-}"
export PATH="$GOROOT/bin:$PATH" GOPATH="$ROOT/gopath:$ROOT/tree/usr/share/gocode" GO111MODULE=off \
  GOTOOLCHAIN=local CGO_ENABLED=0 GOCACHE="$ROOT/gocache" GOFLAGS=
echo "build.sh: $(go version); go build crdapiserver"
go build -trimpath -ldflags='-s -w' -o "$OUT/crdapiserver.tmp" crdapiserver
install -m 0755 "$ROOT/tree/usr/bin/etcd" "$OUT/etcd"
mv "$OUT/crdapiserver.tmp" "$OUT/crdapiserver"
took "built"

# Both binaries must run before the scratch goes.
v=$("$OUT/etcd" --version); echo "${v%%$'\n'*}"
"$OUT/crdapiserver" --help >/dev/null
ls -la "$OUT"
if [ "${KEEP_SCRATCH:-0}" != 1 ]; then rm -rf "$ROOT"; took "removed the scratch folder"; fi
echo "build.sh: done"
