#!/usr/bin/env bash
# The measured CPU configuration of "Natural language: the gap on the Brown corpus" (docs/results.md): Brown corpus, genres as
# slices, bytes as tokens; vanilla, myopic and myopic-hidden arms; the local myopia bonus; the gap report.
# Usage: scripts/brown-gap.sh [OUT] (default runs/brown-gap). Set PYTHON to choose the interpreter and SEEDS
# (default 0) for more seeds, e.g. SEEDS=0,1 (finished runs in OUT are reused, so seeds can be added later).
set -euo pipefail
OUT=${1:-runs/brown-gap}
DATA=${MYOPIA_SHARED_DATA:-../shared/data}/brown
PY=${PYTHON:-python}
SEEDS=${SEEDS:-0}
t0=$(date +%s)
stamp() { echo "[$(date +%H:%M:%S)] $1 (+$(( $(date +%s) - t0 )) s)"; }
stamp "pair"
$PY -m myopia pair --data "$DATA" --out "$OUT" --test-frac 0.2 --seeds "$SEEDS" --no-progress \
    --n-layer 4 --d-model 128 --n-head 4 --seq-len 128 --batch-size 32 --lr 2e-3 --steps 1200 --eval-every 200
stamp "gap"
$PY -m myopia gap "$OUT" --no-progress
stamp "bonus"
$PY -m myopia bonus "$OUT" --no-progress
stamp "report"
$PY -m myopia report "$OUT"
stamp "done"
