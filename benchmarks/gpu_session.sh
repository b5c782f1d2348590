#!/usr/bin/env bash
# One GPU session, every stage independent (a failing stage does not stop the next):
#   1. MoCo images/s vs bare encoder (benchmarks/train_throughput.py), cuDNN as coldseg trains and autotuned
#      (and autotuned without shuffle-BN); each line also times MoCo on ready views, augmentation alone, key forward
#   1b. the same seed twice on the GPU: bit-identical features? (benchmarks/numerics_drift.py --configs repeat)
#   2. U-Net trainings per minute: stacked models (STACKS, e.g. "8 16") on random data (stage segthroughput, opt-in)
#   3. `coldseg select DATA/images --budget 10%` at SIZE px, timed
#   4. the benchmark sweep on DATA with whatever time is left (resumable: rerun with the same BENCH_DIR to continue)
# Results are packed into at most 8 files under OUT (the device tool brings back 8).
#   bash benchmarks/gpu_session.sh DATA_DIR OUT [TOTAL_SECONDS]
# TOTAL_SECONDS (default 540) bounds the whole script: the sweep gets what the stages before it left,
# less PACK_S (default 60) to write the report and pack bench.tgz, so the results are under OUT before a
# device call's limit (600 s) cuts the command off. Under 90 s left: the sweep is skipped.
# tests/test_gpu_script.py rehearses the select and sweep stages on the CPU. Tiny CPU rehearsal of every stage
# (python3 must see coldseg's dependencies, e.g. PATH=$PWD/.venv/bin:$PATH; 113 s on a 2-core Xeon with 60 Dubai tiles, STRATS=random,herding SEEDS=1 RATIOS=10 OMP_NUM_THREADS=1): THR_BATCH=16 THR_STEPS=3 REPRO_STEPS=8 SIZE=32 STEPS=5 EPOCHS=1 SSL_EPOCHS=1 MIN_STEPS=0 DEVICE=cpu bash benchmarks/gpu_session.sh ...
set -u
DATA=$1; OUT=$2; TOTAL_S=${3:-540}; PACK_S=${PACK_S:-60}
[[ $TOTAL_S =~ ^[0-9]+$ && $PACK_S =~ ^[0-9]+$ ]] || { echo "TOTAL_SECONDS ($TOTAL_S) and PACK_S ($PACK_S) must be whole seconds" >&2; exit 2; }
T0=$(date +%s)
export PYTHONPATH=$PWD/src:${PYTHONPATH:-}
export PYTHONUNBUFFERED=1
SIZE=${SIZE:-128}; STEPS=${STEPS:-1500}; EPOCHS=${EPOCHS:-30}; SSL=${SSL_EPOCHS:-60}
MIN_STEPS=${MIN_STEPS:-3000}   # MoCo's default schedule: batch 32, at least 3000 SGD steps
DEVICE=${DEVICE:-auto}; SEEDS=${SEEDS:-3}; RATIOS=${RATIOS:-5,10,20,30}
FEATURE_SEEDS=${FEATURE_SEEDS:-}   # e.g. 3 with SEEDS=12: 12 seeds on 3 MoCo encoders (one cell's Dice moves ~1.4 points with the U-Net seed)
STRATS=${STRATS:-random,herding,ca,ca-typical,kcenter,kmedian,ra,typiclust,probcover,bayesian,coreset-iter}
FEATURES=${FEATURES:-}   # the sweep's --features (default: the benchmark's, moco-backbone); e.g. FEATURES=pixels
                         # STRATS='random,herding[normalize=false]' for the twenty-third session's lead (no MoCo)
BENCH=${BENCH_DIR:-/tmp/bench_$(basename $DATA)${FEATURES:+_$FEATURES}}
STAGES=${STAGES:-throughput,repro,select,sweep}
STACKS=${STACKS:-8 16}; STACK=${STACK:-8}
log() { echo "== $(date +%T) $*"; }
mkdir -p "$OUT"
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; env -u OMP_NUM_THREADS nproc; python3 -c "import torch; print(torch.__version__)") > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
if [[ ,$STAGES, == *,throughput,* ]]; then
  log "MoCo throughput at $SIZE px"
  # cuDNN as coldseg trains, autotuned, and autotuned with plain BN (what shuffle-BN's 4 sub-batches cost)
  for opts in "--kernels reproducible" "--kernels fast" "--kernels fast --bn-splits 1"; do
    python3 benchmarks/train_throughput.py --image-size $SIZE --batch-size ${THR_BATCH:-256} --steps ${THR_STEPS:-40} --device $DEVICE \
      $opts | tee -a "$OUT/moco_throughput.json"
  done
fi
if [[ ,$STAGES, == *,repro,* ]]; then
  log "same seed twice on $DEVICE: bit-identical features?"
  python3 benchmarks/numerics_drift.py "$DATA/images" --image-size $SIZE --batch-size 32 --min-steps ${REPRO_STEPS:-200} \
    --max-images 512 --configs repeat --device $DEVICE | tee "$OUT/numerics_drift.jsonl"
fi
if [[ ,$STAGES, == *,segthroughput,* ]]; then
  for g in $STACKS; do
    log "U-Net trainings per minute, stack $g"
    python3 benchmarks/bench_throughput.py --jobs 16 --steps ${SEG_STEPS:-300} --image-size $SIZE --stack $g --device $DEVICE \
      | tee -a "$OUT/seg_throughput.jsonl"
  done
fi
if [[ ,$STAGES, == *,select,* ]]; then
  log "coldseg select $DATA/images --budget 10% at $SIZE px"
  rm -rf /tmp/select_run
  start=$(date +%s.%N)
  python3 -m coldseg.cli select "$DATA/images" --budget 10% --image-size $SIZE --epochs $EPOCHS \
    --min-steps $MIN_STEPS --device $DEVICE --out /tmp/select_run --cache-dir /tmp/coldseg-cache --quiet
  echo "select rc=$? wall_s=$(python3 -c "print(round($(date +%s.%N)-$start,1))")" | tee -a "$OUT/timings.txt"
  tar czf "$OUT/select_run.tgz" -C /tmp select_run 2>/dev/null
fi
SWEEP_S=$(( TOTAL_S - ($(date +%s) - T0) - PACK_S ))
if [[ ,$STAGES, == *,sweep,* ]] && (( SWEEP_S < 90 )); then
  log "sweep skipped: ${SWEEP_S}s left of ${TOTAL_S}s" | tee -a "$OUT/timings.txt"
elif [[ ,$STAGES, == *,sweep,* ]]; then
  log "benchmark sweep on $DATA ($STRATS; ratios $RATIOS; $SEEDS seeds; limit ${SWEEP_S}s of ${TOTAL_S}s)"
  start=$(date +%s.%N)
  timeout --signal=INT --kill-after=25 $SWEEP_S python3 -m coldseg.cli benchmark "$DATA" --strategies "$STRATS" \
    --ratios $RATIOS --seeds $SEEDS --out "$BENCH" --image-size $SIZE --steps $STEPS --ssl-epochs $SSL \
    --ssl-min-steps $MIN_STEPS ${FEATURE_SEEDS:+--feature-seeds $FEATURE_SEEDS} ${FEATURES:+--features $FEATURES} \
    --device $DEVICE --stack $STACK --quiet
  echo "sweep rc=$? wall_s=$(python3 -c "print(round($(date +%s.%N)-$start,1))")" | tee -a "$OUT/timings.txt"
  python3 -m coldseg.cli report "$BENCH" >/dev/null 2>&1
  python3 scripts/target_check.py "$BENCH" | tee "$OUT/target_check.md"   # issue 4's checks for the default
  python3 scripts/ablation_table.py "$BENCH" | tee -a "$OUT/target_check.md"   # every strategy against random
  tar czf "$OUT/bench.tgz" --exclude='*.pt' -C "$(dirname "$BENCH")" "$(basename "$BENCH")"
  tail -n 40 "$BENCH/report.md" 2>/dev/null
fi
log "done after $(( $(date +%s) - T0 ))s of ${TOTAL_S}s"
