#!/usr/bin/env bash
# The GPU benchmark on a lent GPU machine that has PyTorch but not catdog's data or every package.
#   bash benchmarks/gpu_run.sh add DIR   # copy a pack of benchmarks/gpu_pack.py (its photos, its wheel) into place
#   bash benchmarks/gpu_run.sh smoke     # a few seconds of each GPU training path
#   bash benchmarks/gpu_run.sh full      # the floors: python -m benchmarks gpu
#   bash benchmarks/gpu_run.sh explore   # the fine-tune's neighbours side by side, then the best one timed
#   bash benchmarks/gpu_run.sh train     # train CATDOG_BENCH_GPU_RUNS and bring the runs back (benchmarks/gpu_models.py):
#                                        # their figures are made where they come back, by the same commit
#                                        # (CATDOG_BENCH_COMMIT=$(git rev-parse --short=12 HEAD) names it:
#                                        # the copy's .git can be stale)
# Results, logs and metrics go to $OUT (or ./gpu-out).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
DATA=/root/gpu-data
RUNS=/root/gpu-runs
mkdir -p "$OUT" "$DATA" "$RUNS"
export PYTHONPATH=/tmp/site:$PWD/src:$PWD PYTHONUNBUFFERED=1 CATDOG_GPU_DATA=$DATA CATDOG_BENCH_RUNS_DIR=$RUNS

collect() {
    cp benchmarks/results.json "$OUT/results.json"
    tar -czf "$OUT/runs.tgz" -C "$RUNS" --exclude='*.safetensors' --exclude='checkpoint.pt' --exclude=cache . 2>/dev/null
}

full() {
    echo "$(ls "$DATA" | wc -l) photos"
    # A fresh machine's first import of torch reads it from a cold disk (10-11 s): not catdog's time.
    python3 -c "import torch, timm; torch.zeros(1, device='cuda')"
    timeout 520 python3 -m benchmarks gpu 2>&1 | tee "$OUT/full.log"
    collect
    grep -h "epoch\|saved\|validation\|starts" "$RUNS"/gpu-*.log | tail -n 40
    python3 -c "import json; [print(r['figure'], r['value'], r['unit'], r.get('passed'), r['notes'][-200:]) for r in json.load(open('benchmarks/results.json')) if r['benchmark'] == 'gpu']"
}

case "${1:-}" in
add)
    start=$EPOCHREALTIME
    python3 -m zipfile -e "$2/photos.zip" "$DATA"
    for wheel in "$2"/*.whl; do
        [ -e "$wheel" ] && python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$wheel"
    done
    echo "added $2 in $(awk "BEGIN {print $EPOCHREALTIME - $start}") s: $(ls "$DATA" | wc -l) photos in $DATA"
    ;;
smoke)
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    python3 -c "import torch, torchvision, timm, numpy; print(torch.__version__, torchvision.__version__, timm.__version__, numpy.__version__)"
    CATDOG_BENCH_GPU_RUNS="gpu smoke catnet,gpu smoke lite0" timeout 240 python3 -m benchmarks gpu 2>&1 | tee "$OUT/smoke.log"
    collect
    tail -n 4 "$RUNS"/*.log
    ;;
full)
    full
    ;;
train)
    [ -n "${CATDOG_BENCH_COMMIT:-}" ] || echo "CATDOG_BENCH_COMMIT is unset: the runs record this copy's git HEAD, which can be stale" >&2
    echo "$(ls "$DATA" | wc -l) photos"
    python3 -c "import torch, timm; torch.zeros(1, device='cuda')"
    CATDOG_BENCH_GPU_TRAIN_ONLY=1 timeout "${TRAIN_TIMEOUT:-480}" python3 -m benchmarks gpu 2>&1 | tee "$OUT/train.log"
    python3 -m benchmarks.gpu_models pack "$RUNS" "$OUT"
    grep -h "epoch\|saved\|validation\|stopped" "$RUNS"/gpu-*.log | tail -n 40
    ;;
explore)
    # The fine-tune's neighbour recipes side by side (benchmarks/gpu_explore.py), then the floor's
    # recipe and the best neighbour, each timed alone with a cold cache.
    echo "$(ls "$DATA" | wc -l) photos"
    timeout 360 python3 -m benchmarks.gpu_explore "$DATA" /root/gpu-explore 2>&1 | tee "$OUT/explore.log"
    cp /root/gpu-explore/explore.json "$OUT/"
    tar -czf "$OUT/explore.tgz" -C /root/gpu-explore --exclude=cache --exclude='*.safetensors' --exclude=checkpoint.pt .
    best=$(sed -n 's/^best: //p' "$OUT/explore.log")
    runs="gpu fine-tune lite0"
    [ -n "$best" ] && [ "$best" != "$runs" ] && runs="$runs,$best"
    export CATDOG_BENCH_GPU_RUNS="$runs"
    full
    ;;
*)
    echo "usage: gpu_run.sh add DIR | smoke | full | explore | train" >&2
    exit 2
    ;;
esac
