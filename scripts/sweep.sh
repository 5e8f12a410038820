#!/usr/bin/env bash
# scripts/sweep.sh SWEEP [--cpu] [-o OUT] [--set key=value]... — the job behind `make sweep`:
# generate one program per point of a sweep, train the points that are not finished yet, then
# write the summary table and the loss plot (scripts/sweep_summary.sh).
#
#   SWEEP       specs/sweeps/NAME.lua, or just NAME
#   --cpu       train on the CPU reference backend (programs generated with --no-compile)
#   -o OUT      output root (default out): point P's program is OUT/NAME/P/, its run OUT/NAME/P/run/
#   --set k=v   one more override for every point (passed to gen --sweep)
#
# On the GPU, the points run one after another, or one per GPU when several are visible
# ($CUDA_VISIBLE_DEVICES, else nvidia-smi; GPUS=0,2 picks them), each worker taking the next
# unclaimed point with CUDA_VISIBLE_DEVICES set to its GPU. On the CPU, JOBS=N runs N workers. A run is finished when it has a `done`
# marker, written (atomically) only after the runtime exited successfully; finished points are
# skipped, so an interrupted sweep, run again, trains only the unfinished points: from their
# newest checkpoint when they have one (run = { save_every = K } in the sweep file), else afresh.
# Exit status: 0 when every point is finished, 1 when some failed, 2 for bad arguments or a bad
# sweep file (nothing runs), 130 when interrupted.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

usage() { sed -n '2,9s/^# \{0,1\}//p' "$0" >&2; exit 2; }
sweep="" cpu="" out=out sets=()
while [ $# -gt 0 ]; do
  case $1 in
    --cpu) cpu=1 ;;
    -o) [ $# -ge 2 ] || usage; out=$2; shift ;;
    --set) [ $# -ge 2 ] || usage; sets+=(--set "$2"); shift ;;
    -h|--help) usage ;;
    -*) echo "sweep: unknown option $1" >&2; usage ;;
    *) [ -z "$sweep" ] || { echo "sweep: more than one sweep given ($sweep and $1)" >&2; exit 2; }; sweep=$1 ;;
  esac
  shift
done
[ -n "$sweep" ] || usage
file=$sweep
case $file in */*|*.lua) ;; *) file=specs/sweeps/$sweep.lua ;; esac
[ -f "$file" ] || { echo "sweep: no sweep file $file (sweeps: $(ls specs/sweeps/ 2>/dev/null | sed 's/\.lua$//' | tr '\n' ' '))" >&2; exit 2; }
name=$(basename "$file" .lua)
root=${out%/}/$name

# 1. the devices: one worker per GPU, or one CPU worker
backend=()
if [ -n "$cpu" ]; then
  # JOBS=N CPU workers side by side (default 1: the CPU backend already uses every core)
  [[ "${JOBS:-1}" =~ ^[1-9][0-9]*$ ]] || { echo "sweep: JOBS must be a positive integer (got '${JOBS}')" >&2; exit 2; }
  devs=() backend=(--cpu)
  for ((j = 0; j < ${JOBS:-1}; j++)); do devs+=(""); done
elif [ -n "${GPUS:-}${CUDA_VISIBLE_DEVICES:-}" ]; then
  IFS=, read -ra devs <<<"${GPUS:-$CUDA_VISIBLE_DEVICES}"
elif command -v nvidia-smi >/dev/null 2>&1 && n=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU') && [ "$n" -gt 0 ]; then
  mapfile -t devs < <(seq 0 $((n - 1)))
else
  echo "sweep: no GPU visible (nvidia-smi); train on the CPU with --cpu (make sweep SWEEP=$name CPU=1)" >&2
  exit 2
fi

# 2. the programs (validates every point first: a bad sweep file stops here, before any training)
bin/gen --sweep "$file" -o "$out" ${cpu:+--no-compile} ${sets[@]+"${sets[@]}"} || exit 2
mapfile -t points < <(tail -n +2 "$root/points.tsv" | cut -f1)
mapfile -t runargs < "$root/run.args"

# A run belongs to its program while its copy of config.json (written by the runtime) matches the
# program's: a run of an older configuration is neither finished nor resumable, it is retrained.
current() { cmp -s "$root/$1/config.json" "$root/$1/run/config.json"; }
finished() { [ -f "$root/$1/run/done" ] && current "$1"; }
todo=0
for p in "${points[@]}"; do
  if finished "$p"; then echo "sweep $name: skip $p (finished: $root/$p/run/done)"; else todo=$((todo + 1)); fi
done
where="the CPU (${#devs[@]} worker(s))"
[ -z "$cpu" ] && where="${#devs[@]} GPU(s): ${devs[*]}"
echo "sweep $name: ${#points[@]} points, $todo to train on $where"

# 3. train. Each worker claims a point with mkdir (atomic) in a directory private to this
# invocation, so no stale lock survives an interruption.
claims=$(mktemp -d)
train_point() { # DEV POINT
  local dev=$1 p=$2 dir=$root/$2 run=$root/$2/run t0 t1 rc wall resume=()
  if current "$p" && compgen -G "$run/ckpt/step_*/state.safetensors" >/dev/null; then
    # interrupted after a checkpoint (run.save_every): continue from the newest one
    resume=(--resume)
    echo "sweep $name: resume $p${dev:+ on GPU $dev} from its newest checkpoint in $run/ckpt/"
    echo "---- resumed $(date -u +%FT%TZ)" >>"$run/train.log"
  else
    [ -d "$run" ] && ! current "$p" && [ -f "$run/config.json" ] && echo "sweep $name: $p's program changed: its old run is discarded"
    rm -rf "$run" && mkdir -p "$run" && : >"$run/train.log"
    echo "sweep $name: train $p${dev:+ on GPU $dev} → $run/"
  fi
  rm -f "$run/failed"
  t0=$(date +%s.%N)
  cur_run=$run cur_t0=$t0
  env ${dev:+CUDA_VISIBLE_DEVICES=$dev} bin/runtime "$dir/model.ptx" --train --run-dir "$run" ${resume[@]+"${resume[@]}"} \
    ${backend[@]+"${backend[@]}"} ${runargs[@]+"${runargs[@]}"} </dev/null >>"$run/train.log" 2>&1 &
  child=$!
  wait "$child"; rc=$?
  child=""
  t1=$(date +%s.%N)
  # the wall time of every attempt of this run (an interrupted attempt left its time in wall_prev)
  wall=$(cat "$run/wall_prev" 2>/dev/null | awk -v a="$t0" -v b="$t1" '{ s += $1 } END { printf "%.2f", s + b - a }')
  if [ "$rc" -eq 0 ]; then
    printf 'wall_s %s\ndevice %s\nfinished %s\n' "$wall" "${dev:+GPU $dev}${cpu:+cpu}" "$(date -u +%FT%TZ)" >"$run/done.tmp" &&
      mv "$run/done.tmp" "$run/done"
    echo "sweep $name: finished $p in ${wall} s | $(grep -E '^done:' "$run/train.log" | tail -1)"
  else
    echo "exit $rc after ${wall} s" >"$run/failed"
    { echo "sweep $name: FAILED $p (exit $rc) — log: $run/train.log"; tail -n 5 "$run/train.log" | sed 's/^/    /'; } >&2
  fi
}
worker() { # DEV
  local p
  child=""
  trap 'if [ -n "$child" ]; then
          kill -TERM "$child" 2>/dev/null; wait "$child"
          awk -v a="$cur_t0" -v b="$(date +%s.%N)" "BEGIN { printf \"%.2f\n\", b - a }" >>"$cur_run/wall_prev"
        fi; exit 143' TERM
  for p in "${points[@]}"; do
    finished "$p" && continue
    mkdir "$claims/$p" 2>/dev/null || continue
    train_point "$1" "$p"
  done
}
pids=()
interrupted() {
  trap - INT TERM
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  wait
  rm -rf "$claims"
  echo "sweep $name: interrupted — run the same command again to train the unfinished points" >&2
  exit 130
}
trap interrupted INT TERM
for d in "${devs[@]}"; do
  worker "$d" &
  pids+=($!)
done
wait "${pids[@]}"
trap - INT TERM
rm -rf "$claims"

# 4. the table and the plot
scripts/sweep_summary.sh "$root"
sum_rc=$?
left=()
for p in "${points[@]}"; do finished "$p" || left+=("$p"); done
if [ ${#left[@]} -gt 0 ]; then
  echo "sweep $name: ${#left[@]} point(s) not finished: ${left[*]} (see their run/train.log; rerun to retry them)" >&2
  exit 1
fi
exit $sum_rc
