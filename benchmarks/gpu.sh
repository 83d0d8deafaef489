#!/usr/bin/env bash
# Scoring throughput on a CUDA machine: psyling vs plain transformers vs minicons vs lm-eval, float32 and
# bfloat16, 2000 BLiMP pairs at batch 256, best of 3 (each dtype capped at 150 s), then the sweep overhead: the core
# battery through the Ray executor (one actor on the GPU) against psyling run (capped at 180 s; under 8 minutes).
#
#   bash benchmarks/gpu.sh [DATA_ROOT]
#
# DATA_ROOT (or PSYLING_DATA) is the folder holding blimp/data/*.jsonl; default ../shared/data beside the
# repository. MODEL (default smollm2-135m) may be an alias, a model folder or a .gguf file; the machine has no
# internet, so it must be loadable offline. JSON figures go to $OUT (if set) or benchmarks/results/.
# Tools whose package is missing (minicons, lm_eval) are left out with a message.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"  # no internet there: fail fast instead of waiting on the hub

DATA="${1:-${PSYLING_DATA:-../shared/data}}"
if ! ls "$DATA"/blimp/data/*.jsonl >/dev/null 2>&1; then
    echo "error: no BLiMP files in $DATA/blimp/data: pass the data root as the first argument or set PSYLING_DATA" >&2
    exit 2
fi
export PSYLING_DATA="$(cd "$DATA" && pwd)"
MODEL="${MODEL:-smollm2-135m}"
PAIRS="${PAIRS:-2000}"
BATCH="${BATCH:-256}"
RESULTS="${OUT:-benchmarks/results}"
mkdir -p "$RESULTS"

if ! python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: torch cannot use CUDA here ($(python3 -c 'import torch; print("torch", torch.__version__)' 2>&1)):" \
         "install a CUDA build of torch, or run benchmarks/throughput.py --device cpu" >&2
    exit 3
fi
python3 -c "import transformers, psyling" || { echo "error: transformers or psyling cannot be imported" >&2; exit 3; }

TOOLS="psyling,plain"
for pkg in minicons lm_eval; do
    if python3 -c "import $pkg" 2>/dev/null; then
        TOOLS="$TOOLS,${pkg/lm_eval/lmeval}"
    else
        echo "note: $pkg is not installed; leaving it out" >&2
    fi
done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

for DTYPE in float32 bfloat16; do
    echo "== $MODEL, cuda, $DTYPE, $PAIRS pairs, batch $BATCH, tools $TOOLS"
    if ! timeout 150 python3 benchmarks/throughput.py --model "$MODEL" --device cuda --dtype "$DTYPE" \
            --pairs "$PAIRS" --batch-size "$BATCH" --tools "$TOOLS" --repeat 3 \
            --json "$RESULTS/throughput-cuda-$DTYPE.json" 2>&1 | grep -v "^Loading weights"; then
        echo "warning: the $DTYPE run failed or ran past 150 s" >&2
    fi
done

echo "== sweep overhead: the core battery through the Ray executor vs psyling run, cuda"
if python3 -c "import ray" 2>/dev/null; then
    if ! timeout 240 python3 benchmarks/sweep_overhead.py --model "$MODEL" --device cuda --checkpoints 1,3 \
            --no-local 2>&1 | grep -v "^Loading weights\|^Writing"; then
        echo "warning: the sweep overhead run failed or ran past 240 s" >&2
    fi
else
    echo "note: ray is not installed (pip install 'psyling[sweep]'); leaving the sweep overhead out" >&2
fi
