#!/bin/bash
# Copies this checkout to every host of a Cloud TPU VM slice and installs it.
#
#   TPU_NAME=my-slice ZONE=us-central2-b launch/tpu/setup.sh
set -euo pipefail
: "${TPU_NAME:?}" "${ZONE:?}"
REPO_DIR="${REPO_DIR:-fbjax}"
JAX_VERSION=$(sed -n 's/^jax==//p' "$(dirname "$0")/../../requirements.txt")
cd "$(dirname "$0")/../.."
git archive --format=tar.gz -o /tmp/fbjax.tar.gz HEAD
gcloud compute tpus tpu-vm scp /tmp/fbjax.tar.gz "${TPU_NAME}":/tmp/ --zone "${ZONE}" --worker=all
gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone "${ZONE}" --worker=all --command "
  set -e; mkdir -p ${REPO_DIR} && tar -xzf /tmp/fbjax.tar.gz -C ${REPO_DIR} && cd ${REPO_DIR} &&
  python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt &&
  .venv/bin/pip install -q 'jax[tpu]==${JAX_VERSION}'"
