#!/usr/bin/env bash
# Several TP-GAN training runs at once on one GPU machine, in one command of the device tool
# (10 minutes a command, 15 a task, files back: at most 8, 16 MiB each, 64 MiB in all):
#
#   OUT=/tmp/out [PIFR_COMMIT=sha] [KEEP=2] [BRING="NAME ..."] [SPEED=0] [LAST=1] research/device_sweep.sh MINUTES NAME=CONFIG.json[,KEY=VALUE...] ...
#
# e.g.  research/device_sweep.sh 7 mixed=research/device_mixed.json renders=research/device_renders.json,augment=1
#       research/device_sweep.sh 7 both=research/device_warm.json,pack=carry/a.npz,carry/b.npz,batch=128
# (a comma starts the next KEY=VALUE only where KEY= follows it, so a value may list packs)
#
# Each run is research/device_train.sh (its own RUN_DIR, $SWEEP_DIR/NAME/run) and all share the
# GPU: a width-0.25 generator at batch 32 leaves most of an H100 idle between kernel launches,
# so runs side by side cost each other little, and one job answers several questions. The CPU
# threads are split between them. Back in $OUT: device.txt (machine, commit, GPU use sampled every
# 30 s, and the GPU speed benchmark of the best generator unless SPEED=0), NAME.tgz for every run (train.log,
# losses.csv, run.json, config.json, its last sample grid) and the fp16 generator parts
# (NAME.generator_fp16.safetensors.partNN; join with cat) of the KEEP runs with the best
# validation score (the trainer's own selection rule, on CFP 351-400) — 8 files in all for 3 runs.
set -uo pipefail
minutes=${1:?usage: research/device_sweep.sh MINUTES NAME=CONFIG.json[,KEY=VALUE...] ...}
shift
[ $# -ge 1 ] || { echo "no runs given" >&2; exit 2; }
out=${OUT:?set OUT to the folder whose files come back}
sweep=${SWEEP_DIR:-/tmp/pifr_sweep}
keep=${KEEP:-2}
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
# The machine has no installed pifr: the tree itself is on the path (device_train.sh does the same).
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" PYTHON="$py" PIFR_COMMIT="${PIFR_COMMIT:-$(git -C "$here" rev-parse HEAD 2>/dev/null || echo unknown)}"
threads=$(( $(nproc) / $# )); [ "$threads" -ge 1 ] || threads=1
mkdir -p "$sweep"
{
  date -u +%FT%TZ
  echo "commit $PIFR_COMMIT"
  echo "runs: $*  (${minutes} min each, side by side, $threads CPU threads each)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$py" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available())'
} > "$out/device.txt"
cat "$out/device.txt"
smi=""
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -l 30 > "$sweep/gpu_use.csv" 2>&1 &
  smi=$!
fi
names=()
pids=()
for spec in "$@"; do
  name=${spec%%=*}
  rest=${spec#*=}
  # A comma starts a new override only before KEY=, so a value may hold commas (pack=a.npz,b.npz).
  mapfile -t parts < <(printf '%s\n' "$rest" | sed -E 's/,([A-Za-z_][A-Za-z0-9_.]*=)/\n\1/g')
  cfg=${parts[0]}
  names+=("$name")
  mkdir -p "$sweep/$name/out"
  # device_train.sh prints its own summary; each run's output goes to its folder.
  (OUT="$sweep/$name/out" RUN_DIR="$sweep/$name/run" OMP_NUM_THREADS=$threads \
     bash "$here/research/device_train.sh" "$cfg" "$minutes" "${parts[@]:1}" > "$sweep/$name/job.log" 2>&1
   echo "exit $?" >> "$sweep/$name/job.log") &
  pids+=($!)
done
wait "${pids[@]}"
[ -n "$smi" ] && kill "$smi" 2> /dev/null
{ echo "GPU use (timestamp, utilisation, memory) every 30 s:"; cat "$sweep/gpu_use.csv" 2>/dev/null; } >> "$out/device.txt"
failed=0
for name in "${names[@]}"; do
  tail -n 4 "$sweep/$name/job.log" | sed "s/^/[$name] /"
  grep -q "^exit 0$" "$sweep/$name/job.log" || failed=1
  cp "$sweep/$name/job.log" "$sweep/$name/out/" 2>/dev/null
  cp "$sweep/$name/run/config.json" "$sweep/$name/out/" 2>/dev/null
  # LAST=1: the run's last generator too (fp16), when it fits the archive's 16 MiB with room to
  # spare — the best-by-validation one alone cannot say whether later steps helped.
  last="$sweep/$name/run/generator.safetensors"
  if [ "${LAST:-0}" != 0 ] && [ -f "$last" ] \
     && "$py" "$here/scripts/export_generator.py" "$last" "$sweep/$name/out/generator_last_fp16.safetensors" --fp16 > /dev/null \
     && [ "$(stat -c %s "$sweep/$name/out/generator_last_fp16.safetensors")" -gt $((14 * 2**20)) ]; then
    rm "$sweep/$name/out/generator_last_fp16.safetensors"  # too big to come back inside the archive
  fi
  tar -czf "$out/$name.tgz" -C "$sweep/$name/out" --exclude='generator_fp16.safetensors.part*' --exclude=device.txt .
done
# The best runs by the trainer's selection score (val rank-1 + 1e-3 × identity cosine), best first.
best=$("$py" - "$sweep" "$keep" "${names[@]}" <<'EOF'
import csv, math, sys
from pathlib import Path
sweep, keep, names = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
score = {}
for n in names:
    s = -math.inf
    f = sweep / n / "out" / "losses.csv"
    if f.is_file():
        for row in csv.DictReader(f.open(newline="")):
            if row.get("val_rank1_output"):
                s = max(s, float(row["val_rank1_output"]) + 1e-3 * float(row["val_id_cos_output"]))
    score[n] = s
    print(f"{n}: best validation score {s:.4f}", file=sys.stderr)
print(" ".join(sorted((n for n in names if score[n] > -math.inf), key=lambda n: -score[n])[:keep]))
EOF
)
# BRING="NAME ...": these runs' generators instead (e.g. the two ends of a comparison, which the
# validation score need not pick).
[ -n "${BRING:-}" ] && best=$BRING
echo "bringing back: ${best:-none}"
for name in $best; do
  for p in "$sweep/$name/out"/generator_fp16.safetensors.part*; do
    [ -f "$p" ] && cp "$p" "$out/$name.$(basename "$p")"
  done
done
top=${best%% *}
if [ "${SPEED:-1}" != 0 ] && [ -n "$smi" ] && [ -n "$top" ] && [ -f "$sweep/$top/run/generator_best.safetensors" ]; then
  # GPU speed of the best generator: forward per face, training steps, pifr.frontalize() end to end.
  { echo; echo "speed ($top):"; timeout 90 "$py" "$here/benchmarks/tpgan_speed.py" --device cuda --widths 0.25 1.0 \
      --generator "$sweep/$top/run/generator_best.safetensors" --out "$sweep/speed" 2>&1 | grep -v "it/s\]$" | tail -n 20; } >> "$out/device.txt"
fi
ls -l "$out"
exit $failed  # non-zero when any run failed (what did come back is still in $OUT)
