#!/bin/bash
# Data-parallel training on every host of a Cloud TPU VM slice (v4-32, v5e-16, ...).
# The same launch.train command runs on all hosts; jax.distributed detects the slice.
#
#   TPU_NAME=my-slice ZONE=us-central2-b WORKDIR=/mnt/shared/runs/ae \
#       launch/tpu/train.sh --config configs/autoencoder.py --config.batch_size=512
#
# Run launch/tpu/setup.sh once first. WORKDIR must be a directory every host
# sees (e.g. a Filestore/NFS or gcsfuse mount); re-running resumes.
set -euo pipefail
: "${TPU_NAME:?}" "${ZONE:?}" "${WORKDIR:?set WORKDIR to a directory on a shared filesystem}"
REPO_DIR="${REPO_DIR:-fbjax}"
ARGS=$(printf '%q ' "$@")
gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone "${ZONE}" --worker=all --command \
  "cd ${REPO_DIR} && WANDB_MODE=\${WANDB_MODE:-offline} .venv/bin/python -m launch.train \
   --distributed=on --workdir ${WORKDIR} ${ARGS}"
