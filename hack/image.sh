#!/usr/bin/env bash
# `make image`: build the router image with buildah (no daemon: vfs storage, chroot isolation),
# write it as an OCI archive, and check it by running `semantic-router --version`,
# `semantic-router crds` (must equal crds/semantic-router.yaml) and `run --help` inside it, its
# USER (65532:0) and its heads. Needs root on Debian: buildah and binutils are installed with
# apt-get (--no-install-recommends; chroot isolation needs no runtime) when missing.
#
# Settings (environment, or `make image VAR=...`):
#   IMAGE_PROFILE=release  (default) `cargo build --release` the binary first; the release path.
#   IMAGE_PROFILE=debug    no cargo at all: take target/debug/semantic-router as `make test` (or
#                          `cargo build`) left it. For CI, which has just built it; the image is
#                          only as fresh as that binary.
#   IMAGE_BIN=PATH         no cargo at all: take this binary (any profile).
#   IMAGE_BASE=scratch     (default) the binary, exactly the libraries `ldd` names (copied from
#                          this machine), the CA bundle and the heads, on an empty base.
#   IMAGE_BASE=debian      the same on a minimal root unpacked from Debian packages (base-files,
#                          libc6, libgcc-s1, ca-certificates, netbase, tzdata; `apt-get download`,
#                          `dpkg-deb -x`, no registry), for comparison; see README.
# A binary with debug info is staged stripped of it (`objcopy --strip-debug`: symbols stay, for
# backtraces); a release binary has none and is copied as it is.
#   out: target/image/semantic-router-<tag>.oci.tar, image localhost/semantic-router:<tag>, where
#        <tag> is the version, then -debug for the debug profile, then -debian for that base.
# Reruns stay bounded: the previous image of the same tag (and its containers) is removed first.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
CARGO=${CARGO:-cargo}
PROFILE=${IMAGE_PROFILE:-release}
BASE=${IMAGE_BASE:-scratch}
BIN=${IMAGE_BIN:-}
die() { echo "image: $*" >&2; exit 1; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
case "$PROFILE" in release | debug) ;; *) die "IMAGE_PROFILE must be release or debug, not '$PROFILE'" ;; esac
case "$BASE" in scratch | debian) ;; *) die "IMAGE_BASE must be scratch or debian, not '$BASE'" ;; esac

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
[ -n "$VERSION" ] || die "no version in Cargo.toml"
TAG=$VERSION
[ "$PROFILE" = debug ] && TAG+=-debug
[ "$BASE" = debian ] && TAG+=-debian
IMAGE="localhost/semantic-router:${TAG}"
OUT="$REPO/target/image"
CTX="$OUT/build-$TAG"
ROOT="$CTX/root"
ARCHIVE="$OUT/semantic-router-${TAG}.oci.tar"
BUILDAH=(buildah --storage-driver vfs)
echo "image: $IMAGE (profile $PROFILE, base $BASE${BIN:+, binary $BIN})"
T0=$(date +%s)

# apt_install PACKAGE...: what is missing, from Debian, with one `apt-get update`.
APT_UPDATED=0
apt_update() {
  [ "$APT_UPDATED" = 1 ] && return
  apt-get update -qq || die "apt-get update failed"
  APT_UPDATED=1
}
apt_install() {
  command -v apt-get >/dev/null || die "need the Debian packages $* (apt-get is not available)"
  [ "$(id -u)" = 0 ] || die "need the Debian packages $*; install them as root (apt-get install $*)"
  apt_update
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || die "apt-get install $* failed"
}
missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v objcopy >/dev/null && command -v readelf >/dev/null || missing+=(binutils)
if [ "$BASE" = debian ]; then command -v dpkg-deb >/dev/null || die "IMAGE_BASE=debian needs dpkg-deb (Debian)"; fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  apt_install "${missing[@]}"
  echo "image: installed ${missing[*]} in $(( $(date +%s) - T0 ))s"
fi
T1=$(date +%s)

if [ -n "$BIN" ]; then
  [ -x "$BIN" ] || die "IMAGE_BIN=$BIN is not an executable file"
  BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
elif [ "$PROFILE" = release ]; then
  echo "==> release build"
  nice -n 19 "$CARGO" build --release --locked --bin semantic-router
  BIN="$REPO/target/release/semantic-router"
else
  BIN="$REPO/target/debug/semantic-router"
  [ -x "$BIN" ] || die "$BIN is missing: run \`make test\` (or \`cargo build\`) first, or give IMAGE_BIN"
fi
T2=$(date +%s)

echo "==> staging the root ($BASE) in $ROOT"
rm -rf "$CTX"
mkdir -p "$ROOT"
# Every library ldd resolves, and the dynamic loader, at the paths the binary asks for.
libs=$(ldd "$BIN" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}') \
  || die "ldd cannot read $BIN (is it a dynamically linked Linux binary?)"
[ -n "$libs" ] || die "ldd found no libraries for $BIN"
if [ "$BASE" = scratch ]; then
  for lib in $libs; do
    mkdir -p "$ROOT$(dirname "$lib")"
    cp -L "$lib" "$ROOT$lib"
  done
  mkdir -p "$ROOT/etc/ssl/certs" "$ROOT/tmp"
  cp -L /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/"
  chmod 1777 "$ROOT/tmp"
else
  # A distroless-style root: the packages unpacked, then by hand what their maintainer scripts
  # would have done (there is no shell in the image to run them).
  DEBS=(base-files libc6 libgcc-s1 ca-certificates netbase tzdata)
  debdir="$OUT/debs"
  rm -rf "$debdir"
  mkdir -p "$debdir"
  download() { (cd "$debdir" && apt-get download -qq -o APT::Sandbox::User=root "${DEBS[@]}"); }
  if ! download 2>/dev/null; then
    [ "$(id -u)" = 0 ] || die "apt-get download ${DEBS[*]} failed (and apt-get update needs root)"
    apt_update
    download || die "apt-get download ${DEBS[*]} failed"
  fi
  # Each package's control record goes to var/lib/dpkg/status.d/ (as distroless does), so that
  # image scanners can tell which libc6 and ca-certificates the image holds.
  mkdir -p "$ROOT/var/lib/dpkg/status.d"
  for deb in "$debdir"/*.deb; do
    dpkg-deb -x "$deb" "$ROOT"
    dpkg-deb -f "$deb" > "$ROOT/var/lib/dpkg/status.d/$(dpkg-deb -f "$deb" Package)"
    echo "  $(basename "$deb")"
  done
  for lib in $libs; do
    [ -e "$ROOT$lib" ] || die "the Debian root has no $lib, which ldd names for $BIN"
  done
  # ca-certificates' postinst (update-ca-certificates): one bundle of all the packaged certs.
  mkdir -p "$ROOT/etc/ssl/certs"
  (cd "$ROOT/usr/share/ca-certificates" && find . -name '*.crt' | LC_ALL=C sort \
    | while IFS= read -r c; do awk 1 "$c"; done) > "$ROOT/etc/ssl/certs/ca-certificates.crt"
  grep -q 'BEGIN CERTIFICATE' "$ROOT/etc/ssl/certs/ca-certificates.crt" \
    || die "ca-certificates brought no certificates"
  # base-passwd's job, as distroless does it: root, nonroot (65532, our USER) and nobody.
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin' \
    'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' > "$ROOT/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' 'nobody:x:65534:' > "$ROOT/etc/group"
  ln -sf /usr/share/zoneinfo/Etc/UTC "$ROOT/etc/localtime"
  # Documentation nobody reads in a container.
  rm -rf "$ROOT/usr/share/doc" "$ROOT/usr/share/man" "$ROOT/usr/share/info" "$ROOT/usr/share/lintian"
  mkdir -p "$ROOT/tmp"
  chmod 1777 "$ROOT/tmp"
fi
mkdir -p "$ROOT/usr/local/bin" "$ROOT/usr/share/semantic-router/heads"
staged="$ROOT/usr/local/bin/semantic-router"
sections=$(readelf -S --wide "$BIN") || die "readelf cannot read $BIN"
if [[ "$sections" == *" .debug_"* ]]; then
  objcopy --strip-debug "$BIN" "$staged"
  echo "  binary: $BIN, debug info stripped ($(mib "$(stat -c %s "$BIN")") -> $(mib "$(stat -c %s "$staged")") MiB)"
else
  install -m 0755 "$BIN" "$staged"
  echo "  binary: $BIN ($(mib "$(stat -c %s "$BIN")") MiB)"
fi
cp -r "$REPO/heads/all-MiniLM-L6-v2" "$ROOT/usr/share/semantic-router/heads/"
cp "$REPO/Containerfile" "$CTX/Containerfile"
T3=$(date +%s)

echo "==> buildah bud"
# The previous image of this tag, and any container left on it, go first: vfs keeps full copies.
if "${BUILDAH[@]}" inspect --type image "$IMAGE" >/dev/null 2>&1; then
  "${BUILDAH[@]}" rmi --force "$IMAGE" >/dev/null
fi
"${BUILDAH[@]}" bud --isolation chroot --build-arg "VERSION=${VERSION}" \
  -f "$CTX/Containerfile" -t "$IMAGE" "$CTX"
rm -f "$ARCHIVE"
"${BUILDAH[@]}" push "$IMAGE" "oci-archive:$ARCHIVE:${IMAGE#localhost/}"
T4=$(date +%s)

echo "==> checks inside the image"
ctr=$("${BUILDAH[@]}" from "$IMAGE")
trap '"${BUILDAH[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
version=$("${BUILDAH[@]}" run --isolation chroot "$ctr" -- /usr/local/bin/semantic-router --version) \
  || die "'semantic-router --version' failed inside the image"
[ "$version" = "semantic-router ${VERSION}" ] || die "--version inside the image said '$version'"
"${BUILDAH[@]}" run --isolation chroot "$ctr" -- /usr/local/bin/semantic-router crds > "$CTX/crds.yaml" \
  || die "'semantic-router crds' failed inside the image"
cmp -s "$CTX/crds.yaml" "$REPO/crds/semantic-router.yaml" \
  || die "'semantic-router crds' inside the image differs from crds/semantic-router.yaml" \
    "(diff $CTX/crds.yaml crds/semantic-router.yaml; is $BIN stale?)"
user=$("${BUILDAH[@]}" inspect --format '{{.OCIv1.Config.User}}' "$IMAGE")
[ "$user" = "65532:0" ] || die "USER is '$user', not 65532:0"
"${BUILDAH[@]}" run --isolation chroot "$ctr" -- /usr/local/bin/semantic-router run --help >/dev/null \
  || die "'semantic-router run --help' failed inside the image"
mnt=$("${BUILDAH[@]}" mount "$ctr")
for head in category complexity jailbreak; do
  for file in head.safetensors labels.json; do
    [ -f "$mnt/usr/share/semantic-router/heads/all-MiniLM-L6-v2/$head/$file" ] \
      || die "heads/all-MiniLM-L6-v2/$head/$file is not in the image"
  done
done
[ -s "$mnt/etc/ssl/certs/ca-certificates.crt" ] || die "the image has no CA bundle"
"${BUILDAH[@]}" umount "$ctr" >/dev/null
T5=$(date +%s)

echo "image: $IMAGE ok (profile $PROFILE, base $BASE): $version; crds match; USER $user"
echo "image: root $(mib "$(du -sb "$ROOT" | cut -f1)") MiB," \
  "OCI archive $(mib "$(stat -c %s "$ARCHIVE")") MiB ($ARCHIVE)"
echo "image: install $((T1 - T0))s, build $((T2 - T1))s, stage $((T3 - T2))s," \
  "bud + push $((T4 - T3))s, checks $((T5 - T4))s; total $((T5 - T0))s"
