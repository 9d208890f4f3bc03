#!/usr/bin/env bash
# One accelerator session (docs/device_h200.md), from the repository root: enhance speed, segmentation at 256x384 on HC18,
# classification on the phantom + predict speed, the autoencoder benchmark at 224 px.
# $DEVDATA holds compact copies of hc18/ and fetal_brain_abnormalities/ made by
# python -m benchmarks.shrink_real_data (default .devdata); results go to $OUT/out.tgz.
#   bash benchmarks/device_run.sh
set -u
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false WANDB_MODE=disabled
FINAL=${OUT:-/tmp/devfinal}; OUT=/tmp/devout; mkdir -p $OUT $FINAL
SEG_STEPS=${SEG_STEPS:-1200}; CLS_STEPS=${CLS_STEPS:-300,1500,300,1000}; AE_EPOCHS=${AE_EPOCHS:-15}
D=/tmp/fbjax_tfds; DEVDATA=${DEVDATA:-.devdata}
t0=$(date +%s); ts(){ echo "[$(( $(date +%s) - t0 )) s] $*" | tee -a $OUT/timeline.txt; tar czf $FINAL/out.tgz --exclude=checkpoints -C $OUT . 2>/dev/null; }
ts start; nvidia-smi -L > $OUT/gpu.txt 2>&1; python3 -c "import jax; print(jax.devices())" >> $OUT/gpu.txt 2>&1
B='from fbjax.data import builders as b; import sys; b.prepare(sys.argv[1], data_dir=sys.argv[2], config=sys.argv[3] or None, manual_dir=sys.argv[4] or None)'
python3 -c "$B" fetal_brain_synth $D small "" > $OUT/build_phantom.log 2>&1 &
python3 -c "$B" hc18 $D "" $DEVDATA/hc18 > $OUT/build_hc18.log 2>&1 &
python3 -c "$B" fetal_brain_abnormalities $D "" $DEVDATA/fetal_brain_abnormalities > $OUT/build_fba.log 2>&1 &
timeout 100 python3 -m benchmarks.enhance --device --reps 5 ${ENH_EXTRA:-} > $OUT/enhance.json 2> $OUT/enhance.log; ts "enhance rc=$?"
wait; ts builds
# Two trainings side by side on the one GPU (no speed is read from these two).
timeout 230 python3 -m benchmarks.classify --device --stages phantom --steps $CLS_STEPS --data_dir $D \
  --workdir /tmp/clsdev ${CLS_EXTRA:-} > $OUT/classify_phantom.json 2> $OUT/classify_phantom.log &
timeout 230 python3 -m benchmarks.segment --device --stages train --steps $SEG_STEPS \
  --hc18 $DEVDATA/hc18 --data_dir $D --workdir /tmp/segdev ${SEG_EXTRA:-} > $OUT/segment_train.json 2> $OUT/segment_train.log; ts "segment train rc=$?"
wait; ts "classify phantom done"; cp /tmp/clsdev/benchmark.* $OUT/ 2>/dev/null; mkdir -p $OUT/cls; cp /tmp/clsdev/benchmark.json $OUT/cls/phantom_benchmark.json 2>/dev/null
# Alone on the GPU from here (speed numbers).
timeout 110 python3 -m benchmarks.segment --device --stages hc18,phantom,speed --steps $SEG_STEPS \
  --hc18 $DEVDATA/hc18 --data_dir $D --workdir /tmp/segdev ${SEG_EXTRA:-} > $OUT/segment_eval.json 2> $OUT/segment_eval.log; ts "segment eval rc=$?"
cp /tmp/segdev/benchmark.* $OUT/ 2>/dev/null
timeout 90 python3 -m benchmarks.classify --device --stages speed --data_dir $D --workdir /tmp/clsdev \
  --seg_workdir /tmp/segdev/mix ${CLS_EXTRA2:-} > $OUT/classify_speed.json 2> $OUT/classify_speed.log; ts "classify speed rc=$?"
timeout 150 python3 -m benchmarks.autoencoder --preset device --epochs $AE_EPOCHS --data_dir $D \
  --manual_dir $DEVDATA/fetal_brain_abnormalities --workdir $OUT/ae ${AE_EXTRA:-} > $OUT/autoencoder.json 2> $OUT/autoencoder.log; ts "autoencoder rc=$?"
ts end
