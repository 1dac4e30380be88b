#!/usr/bin/env bash
# The GPU benchmark on a lent GPU machine that has PyTorch but not catdog's data or every package.
#   bash benchmarks/gpu_run.sh add DIR   # copy a pack of benchmarks/gpu_pack.py (its photos, its wheel) into place
#   bash benchmarks/gpu_run.sh smoke     # a few seconds of each GPU training path
#   bash benchmarks/gpu_run.sh full      # the floors: python -m benchmarks gpu
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
    echo "$(ls "$DATA" | wc -l) photos"
    timeout 520 python3 -m benchmarks gpu 2>&1 | tee "$OUT/full.log"
    collect
    grep -h "epoch\|saved\|validation" "$RUNS"/gpu-*.log | tail -n 40
    python3 -c "import json; [print(r['figure'], r['value'], r['unit'], r.get('passed')) for r in json.load(open('benchmarks/results.json')) if r['benchmark'] == 'gpu']"
    ;;
*)
    echo "usage: gpu_run.sh add DIR | smoke | full" >&2
    exit 2
    ;;
esac
