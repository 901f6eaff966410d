#!/usr/bin/env bash
# What document masking changes on the Brown pair (docs/attention-variants.md, "Measured"). Two pairs that differ
# only in --document-mask (same corpus split, seeds, init, data order and budget), each scored by `myopia gap`
# on the same held-out documents; then scripts/document_mask_effect.py compares them with the seed-inclusive
# intervals of myopia.analysis.stats. A tiny CPU configuration (2 layers x width 64, context 64, batch 8, 80 steps,
# 3 seeds) that fits a few minutes of a shared 2-core machine: far from converged, see the docs for what it shows.
# Usage: scripts/document-mask-brown.sh [OUT] (default runs/document-mask-brown). PYTHON picks the interpreter.
set -euo pipefail
OUT=${1:-runs/document-mask-brown}
DATA=${MYOPIA_SHARED_DATA:-../shared/data}/brown
PY=${PYTHON:-python}
SEEDS=${SEEDS:-0,1,2}
COMMON=(--data "$DATA" --test-frac 0.2 --seeds "$SEEDS" --no-progress --n-layer 2 --d-model 64 --n-head 4
        --seq-len 64 --batch-size 8 --lr 3e-3 --steps 80 --eval-every 0 --ckpt-every 0 --eval-tokens 4096)
t0=$(date +%s)
stamp() { echo "[$(date +%H:%M:%S)] $1 (+$(( $(date +%s) - t0 )) s)"; }
for mask in document-mask no-document-mask; do
  stamp "pair --$mask"
  $PY -m myopia pair "${COMMON[@]}" --out "$OUT/$mask" "--$mask"
  stamp "gap --$mask"
  $PY -m myopia gap "$OUT/$mask" --max-docs 12 --bootstrap 200 --no-progress
done
stamp "compare"
$PY scripts/document_mask_effect.py "$OUT/document-mask" "$OUT/no-document-mask" --json "$OUT/effect.json"
stamp "done"
