#!/usr/bin/env bash
# Train the TP-GAN generator in one time-limited job on a GPU machine that has torch but none of
# pifr's inference extras (the device tool's machines: Python 3.12, torch 2.11, no facenet-pytorch
# or dlib, no network, 10-minute commands, files back of at most 16 MiB each and 8 per call), and
# leave in $OUT what is needed to judge and ship the run:
#
#   OUT=/tmp/out [PIFR_COMMIT=sha] [PYTHON=python3] research/device_train.sh CONFIG.json MINUTES [KEY=VALUE ...]
#
# The run folder ($RUN_DIR, default /tmp/pifr_run) stays on the machine, so a second job on the
# same warm machine resumes it (its checkpoint, ~176 MB at width 0.25, never travels). Back in
# $OUT: device.txt, train.log, losses.csv, run.json, the last sample grid, and the best generator
# in fp16 split into parts of 15 MiB (join: cat generator_fp16.safetensors.part* > g.safetensors).
# Packs named by CONFIG must be carried with the working tree (`pifr.train.pack --merge ... --quality`).
set -euo pipefail
cfg=${1:?usage: research/device_train.sh CONFIG.json MINUTES [KEY=VALUE ...]}
minutes=${2:?minutes of training}
shift 2
out=${OUT:?set OUT to the folder whose files come back}
run=${RUN_DIR:-/tmp/pifr_run}
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{
  date -u +%FT%TZ
  # The tree may travel without .git: pass PIFR_COMMIT=<sha> in the command to record it.
  echo "commit ${PIFR_COMMIT:-$(git -C "$here" rev-parse HEAD 2>/dev/null || echo unknown)}"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$py" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available())'
} > "$out/device.txt"
cat "$out/device.txt"
status=0
"$py" -m pifr.train --config "$cfg" --set out="$run" max_minutes="$minutes" "$@" > "$out/train.log" 2>&1 || status=$?
tail -n 3 "$out/train.log" | tr '\r' '\n' | tail -n 3
cp "$run/losses.csv" "$run/run.json" "$out/" 2>/dev/null || true
last=$(ls "$run"/samples_*.png 2>/dev/null | tail -n 1 || true)  # none before the first sample_every; pipefail would stop the job here
[ -n "$last" ] && cp "$last" "$out/"
best="$run/generator_best.safetensors"
[ -f "$best" ] || best="$run/generator.safetensors"
if [ -f "$best" ]; then
  "$py" "$here/scripts/export_generator.py" "$best" "$run/generator_fp16.safetensors" --fp16
  split -b 15M -d "$run/generator_fp16.safetensors" "$out/generator_fp16.safetensors.part"
fi
ls -l "$out"
exit $status
