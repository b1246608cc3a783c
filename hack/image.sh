#!/usr/bin/env bash
# `make image`: build the router image with buildah (no daemon: vfs storage, chroot isolation),
# write it as an OCI archive, and check it by running `semantic-router --version` and
# `semantic-router crds` inside it. Needs root (Debian's buildah is installed when missing).
#   out: target/image/semantic-router-<version>.oci.tar
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
CARGO=${CARGO:-cargo}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
IMAGE="localhost/semantic-router:${VERSION}"
OUT="$REPO/target/image"
BUILDAH=(buildah --storage-driver vfs)
T0=$(date +%s)

if ! command -v buildah >/dev/null; then
  command -v apt-get >/dev/null || { echo "image: buildah is missing and apt-get is not available" >&2; exit 1; }
  [ "$(id -u)" = 0 ] || { echo "image: buildah is missing; install it as root (apt-get install buildah)" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah >/dev/null
fi

echo "==> release build"
nice -n 19 "$CARGO" build --release --locked --bin semantic-router
BIN="$REPO/target/release/semantic-router"
T1=$(date +%s)

echo "==> staging the root"
ROOT="$OUT/root"
rm -rf "$ROOT"
mkdir -p "$ROOT/usr/local/bin" "$ROOT/usr/share/semantic-router/heads" "$ROOT/etc/ssl/certs" "$ROOT/tmp"
install -m 0755 "$BIN" "$ROOT/usr/local/bin/semantic-router"
# Every library ldd resolves, and the dynamic loader, at the paths the binary asks for.
libs=$(ldd "$BIN" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
[ -n "$libs" ] || { echo "image: ldd found no libraries for $BIN" >&2; exit 1; }
for lib in $libs; do
  mkdir -p "$ROOT$(dirname "$lib")"
  cp -L "$lib" "$ROOT$lib"
done
cp -r "$REPO/heads/all-MiniLM-L6-v2" "$ROOT/usr/share/semantic-router/heads/"
cp -L /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/"
chmod 1777 "$ROOT/tmp"
cp "$REPO/Containerfile" "$OUT/Containerfile"

echo "==> buildah bud"
"${BUILDAH[@]}" bud --isolation chroot --build-arg "VERSION=${VERSION}" -f "$OUT/Containerfile" -t "$IMAGE" "$OUT"
rm -f "$OUT/semantic-router-${VERSION}.oci.tar"
"${BUILDAH[@]}" push "$IMAGE" "oci-archive:$OUT/semantic-router-${VERSION}.oci.tar:${IMAGE#localhost/}"
T2=$(date +%s)

echo "==> checks inside the image"
ctr=$("${BUILDAH[@]}" from "$IMAGE")
trap '"${BUILDAH[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
version=$("${BUILDAH[@]}" run --isolation chroot "$ctr" -- /usr/local/bin/semantic-router --version)
[ "$version" = "semantic-router ${VERSION}" ] || { echo "image: --version said '$version'" >&2; exit 1; }
"${BUILDAH[@]}" run --isolation chroot "$ctr" -- /usr/local/bin/semantic-router crds > "$OUT/crds.yaml"
cmp -s "$OUT/crds.yaml" "$REPO/crds/semantic-router.yaml" \
  || { echo "image: 'semantic-router crds' inside the image differs from crds/semantic-router.yaml" >&2; exit 1; }
user=$("${BUILDAH[@]}" inspect --format '{{.OCIv1.Config.User}}' "$IMAGE")
[ "$user" = "65532:0" ] || { echo "image: USER is '$user'" >&2; exit 1; }
"${BUILDAH[@]}" run --isolation chroot "$ctr" -- /usr/local/bin/semantic-router run --help >/dev/null
mnt=$("${BUILDAH[@]}" mount "$ctr")
for head in category complexity jailbreak; do
  for file in head.safetensors labels.json; do
    [ -f "$mnt/usr/share/semantic-router/heads/all-MiniLM-L6-v2/$head/$file" ] \
      || { echo "image: heads/all-MiniLM-L6-v2/$head/$file is not in the image" >&2; exit 1; }
  done
done
"${BUILDAH[@]}" umount "$ctr" >/dev/null
T3=$(date +%s)

size=$(du -b "$OUT/semantic-router-${VERSION}.oci.tar" | cut -f1)
root_size=$(du -sb "$ROOT" | cut -f1)
echo "image: $IMAGE ok: $version; crds match; USER $user"
echo "image: root $(( root_size / 1024 / 1024 )) MiB, OCI archive $(( size / 1024 / 1024 )) MiB ($OUT/semantic-router-${VERSION}.oci.tar)"
echo "image: release build $((T1 - T0))s, stage + bud + push $((T2 - T1))s, checks $((T3 - T2))s"
