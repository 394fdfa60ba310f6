#!/usr/bin/env bash
# One lease of a lent GPU machine spent on the TP-GAN refiner (issue 44): train the TP-GAN generator
# (global + local pathways, refine mode) on rotate-and-render pairs for a fixed wall-clock budget,
# with its adversarial (two-scale patch D, hinge + feature matching), symmetry, identity (dlib,
# fp16 copy in weights/) and total-variation terms, bf16 autocast, the pairs decoded once onto
# the GPU — research/device_tpgan_refiner.json — and bring back what the next lease continues from.
#
#   device tool: run(command="OUT=$OUT PIFR_COMMIT=<sha> bash research/device_tpgan_refiner.sh",
#                    carry=["carry/tpgan_ckpt"], timeout_s=600)      # carry only when continuing
#
# Env: MINUTES (training budget, default 8; start-up, the last validation and saving add ~0.5 min),
# DEVICE (default cuda; cpu for the rehearsal here), CONFIG (default research/device_tpgan_refiner.json),
# RUN_DIR (default /tmp/pifr_tpgan_refiner), INIT_DIR (default carry/tpgan_ckpt). Arguments after
# the script are flags of `python -m pifr.train.refine` and override the config (e.g. --batch 48).
#
# Continuing: a checkpoint.safetensors (or its parts checkpoint.safetensors.partNN, joined here) in
# INIT_DIR starts the run from that step with the generator and discriminator it holds (fp16; the
# optimisers start afresh unless the config keeps them: "ckpt_optimizer", +2 bytes a parameter).
# So leases add up: put the parts that came back in carry/tpgan_ckpt/ and run the same command.
#
# Back in $OUT (8 files at most, each ≤ 16 MiB; ≈ 21 MiB in all at the config's width 0.125, ≈ 55 MiB at 0.25):
#   device.txt                       machine, commit, GPU use every 30 s, the files and their sizes
#   train.log                        the trainer's log (no progress bars)
#   log.jsonl                        losses every log_every steps, validation figures every val_every
#   samples.jpg                      validation pairs: render | refined | photo (held-out LFW/CFP 001-350 people)
#   checkpoint.safetensors.part00/01 the run's last state (G + D fp16, 10.4 MiB at width 0.125, 27.8 at 0.25), split at 15 MiB:
#                                    cat checkpoint.safetensors.part* > checkpoint.safetensors
#   best.safetensors.part00/01       refiner weights best by validation (dlib cosine), only when not the last step's
# The last step's refiner weights: python -m pifr.train.refine --export checkpoint.safetensors refiner.safetensors
set -uo pipefail
out=${OUT:?set OUT to the folder whose files come back}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
py=${PYTHON:-python3}
minutes=${MINUTES:-8}
device=${DEVICE:-cuda}
config=${CONFIG:-research/device_tpgan_refiner.json}
run=${RUN_DIR:-/tmp/pifr_tpgan_refiner}
init_dir=${INIT_DIR:-carry/tpgan_ckpt}
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TQDM_DISABLE=1
mkdir -p "$run" "$out"
{
  date -u +%FT%TZ
  echo "commit ${PIFR_COMMIT:-$(git -C "$here" rev-parse HEAD 2>/dev/null || echo unknown)}"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$py" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available())'
  echo "config $config, $minutes min, device $device, extra flags: $*"
  echo "tree here: $(du -sb "$here" | cut -f1) bytes (a lease takes 64 MiB = 67108864)"
} > "$out/device.txt"
init=()
if ls "$init_dir"/checkpoint.safetensors.part* > /dev/null 2>&1; then
  cat "$init_dir"/checkpoint.safetensors.part* > "$run/init_checkpoint.safetensors"
  init=(--init "$run/init_checkpoint.safetensors")
elif [ -f "$init_dir/checkpoint.safetensors" ]; then
  init=(--init "$init_dir/checkpoint.safetensors")
fi
echo "init: ${init[*]:-none (a fresh run)}" >> "$out/device.txt"
smi=""
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -l 30 > "$run/gpu_use.csv" 2>&1 &
  smi=$!
fi
threads=$(( $(nproc) > 8 ? 8 : $(nproc) ))
# The trainer stops itself after MINUTES of training; the timeout is a backstop whose SIGTERM it
# also takes as "save and stop".
status=0
t0=$(date +%s)
timeout -s TERM $(( ${minutes%.*} * 60 + 90 )) "$py" -m pifr.train.refine --config "$config" --run "$run" --device "$device" \
  --minutes "$minutes" --threads "$threads" "${init[@]}" "$@" > "$out/train.log" 2>&1 || status=$?
# bf16 autocast is the one part never run on this GPU before: a run that failed before its first
# save is run again without it, on what is left of the budget, instead of losing the lease.
if [ "$status" != 0 ] && [ ! -f "$run/checkpoint.safetensors" ]; then
  left=$(( ${minutes%.*} * 60 - ($(date +%s) - t0) ))
  if [ "$left" -gt 120 ]; then
    echo "--- failed (status $status) before its first save; again with --amp off for $left s" >> "$out/train.log"
    echo "retried with --amp off ($left s left)" >> "$out/device.txt"
    status=0
    timeout -s TERM $(( left + 90 )) "$py" -m pifr.train.refine --config "$config" --run "$run" --device "$device" \
      --minutes "$(( left / 60 ))" --threads "$threads" "${init[@]}" "$@" --amp off >> "$out/train.log" 2>&1 || status=$?
  fi
fi
[ -n "$smi" ] && kill "$smi" 2> /dev/null
tail -n 4 "$out/train.log"
cp "$run/log.jsonl" "$out/" 2> /dev/null
cp "$run/samples.jpg" "$out/" 2> /dev/null
if [ -f "$run/checkpoint.safetensors" ]; then
  split -b 15M -d "$run/checkpoint.safetensors" "$out/checkpoint.safetensors.part"
fi
# The best-by-validation weights come back only when they are not the last step's.
if [ -f "$run/best.safetensors" ] && [ -f "$run/refiner.safetensors" ] \
   && ! "$py" - "$run/best.safetensors" "$run/refiner.safetensors" <<'EOF'
import json, sys
from safetensors import safe_open
steps = [json.loads(safe_open(p, framework="pt").metadata()["meta"])["step"] for p in sys.argv[1:]]
sys.exit(0 if steps[0] == steps[1] else 1)
EOF
then
  split -b 15M -d "$run/best.safetensors" "$out/best.safetensors.part"
fi
{
  echo "GPU use (timestamp, utilisation, memory) every 30 s:"
  cat "$run/gpu_use.csv" 2> /dev/null
  echo "exit status $status"
  echo "files back:"
  ls -l "$out"
} >> "$out/device.txt"
ls -l "$out"
exit $status
