#!/bin/bash
# Writes a config's sweep() as a SLURM array (one single-node run per task) and submits it.
#
#   launch/slurm/sweep.sh configs/autoencoder.py /shared/runs/ae_sweep --sbatch=--gres=gpu:1
set -euo pipefail
CONFIG="$1"; WORKDIR="$2"; shift 2
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-.venv/bin/python}"
"${PYTHON}" -m launch.sweep --config "${CONFIG}" --workdir "${WORKDIR}" --mode slurm "$@"
sbatch "${WORKDIR}/sweep.sbatch"
