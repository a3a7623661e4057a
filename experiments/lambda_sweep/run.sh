#!/usr/bin/env bash
# Re-run the recorded lambda study (six runs, lambda 0.5..1.0) and refresh summary.{csv,md,png} here.
# Extra arguments are Hydra overrides, e.g. trainer.max_epochs=20.
set -euo pipefail
cd "$(dirname "$0")/../.."
# The shared copy of CausalLite10K when it is beside the checkout, as the Makefile does.
if [[ -z "${CAUSALDREAMER_DATA_DIR:-}" && -f ../shared/data/causallite10k/CausalLite10K.csv ]]; then
    export CAUSALDREAMER_DATA_DIR="$(cd ../shared/data/causallite10k && pwd)"
fi
export WANDB_MODE="${WANDB_MODE:-offline}"
sweep_dir="logs/studies/lambda_sweep/$(date +%Y-%m-%d_%H-%M-%S)"
.venv/bin/python -m causaldreamer.train +experiment=lambda_sweep "hydra.sweep.dir=$sweep_dir" "$@"
cp "$sweep_dir"/summary.csv "$sweep_dir"/summary.md "$sweep_dir"/summary.png experiments/lambda_sweep/
