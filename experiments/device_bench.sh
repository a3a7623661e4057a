#!/usr/bin/env bash
# Issue 16, item 4: experiments/bench_train.py on the device tool's GPU machine, as one prepared run.
#
#   make device-bundle                      # here: .device/ (ignored) gets what the machine lacks
#   device run: command "bash experiments/device_bench.sh", carry [".device"], timeout_s 540
#
# The machine has its own python3 with CUDA torch and transformers, no network and no packaged MiniLM
# weights (too large to carry): the lightning wheel is installed from the bundle, and the encoder is
# MiniLM's architecture with random weights (for timing the same work). Output: $OUT/*.txt.
# A dry run on a CPU: PYTHON=.venv/bin/python BENCH_DEVICE=cpu BENCH_ARGS="--epochs 1 --limit-train 256
# --paper-steps 2 --part-steps 16" bash experiments/device_bench.sh
set -euo pipefail
bundle=.device
python=${PYTHON:-python3}
device=${BENCH_DEVICE:-cuda}
out=${OUT:-$bundle/out}
mkdir -p "$out"
[[ -d $bundle/wheels ]] || { echo "error: $bundle/ missing; run 'make device-bundle' first" >&2; exit 2; }
"$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$bundle"/wheels/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
export CAUSALDREAMER_DATA_DIR=$PWD/$bundle/data/causallite10k CAUSALDREAMER_ECARE_DIR=$PWD/$bundle/data/ecare
export CAUSALDREAMER_CACHE_DIR=/tmp/causaldreamer-cache
"$python" - "$bundle/minilm" /tmp/minilm-random <<'PY'
import sys
from transformers import AutoConfig, AutoModel, AutoTokenizer

source, target = sys.argv[1:]
AutoModel.from_config(AutoConfig.from_pretrained(source)).save_pretrained(target)
AutoTokenizer.from_pretrained(source).save_pretrained(target)
PY
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
  "$python" -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"
} 2>&1 | tee "$out/machine.txt"
bench=("$python" experiments/bench_train.py --device "$device" --encoder /tmp/minilm-random)
# The bench as the issue runs it first, so that its numbers come back even if compiling outlasts the call;
# then the step compiled (and, on the GPU, with CUDA graphs), on a smaller budget.
# shellcheck disable=SC2086  # BENCH_ARGS is a list of options
"${bench[@]}" ${BENCH_ARGS:---epochs 3 --paper-steps 30} 2>&1 | tee "$out/bench_train.txt"
# shellcheck disable=SC2086
"${bench[@]}" --compile ${BENCH_ARGS:---epochs 1 --paper-steps 2 --part-steps 100} 2>&1 | tee "$out/bench_train_compiled.txt"
