#!/bin/bash
# Prediction over a large folder as a SLURM job array: one shard per array task, each an
# independent process (no jax.distributed). The last task to finish merges the shards into
# OUT/predictions.csv, errors.csv, skipped.csv, summary.json and report.html.
#
#   INPUT=/shared/scans OUT=/shared/scans_out sbatch --array=0-15 launch/slurm/predict_array.sh \
#       --workdir /shared/runs/cls --seg_workdir /shared/runs/seg --pixel_spacing_mm 0.15
#
# OUT must be on a filesystem every node sees. Re-submitting the same command resumes: each
# shard predicts only its files without a row or an error row. If the automatic merge did not
# run (a task was cancelled), `python -m launch.predict --merge OUT` does it once all are done.
#SBATCH --job-name=fbjax-predict
#SBATCH --ntasks=1
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --output=%x-%A_%a.out
set -euo pipefail

: "${INPUT:?set INPUT to the folder (or glob) of images}"
: "${OUT:?set OUT to an output folder on a shared filesystem}"
: "${SLURM_ARRAY_TASK_ID:?submit with sbatch --array=0-(N-1)}"
cd "${FBJAX_ROOT:-${SLURM_SUBMIT_DIR}}"
PYTHON="${PYTHON:-.venv/bin/python}"
export WANDB_MODE="${WANDB_MODE:-offline}"
# The shard count is the array's size, so that --array=0-15 means 16 shards.
NUM_SHARDS="${NUM_SHARDS:-${SLURM_ARRAY_TASK_COUNT}}"

exec "${PYTHON}" -m launch.predict --input "${INPUT}" --out "${OUT}" \
    --num_shards "${NUM_SHARDS}" --shard_index "${SLURM_ARRAY_TASK_ID}" \
    --distributed=off "$@"
