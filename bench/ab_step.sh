#!/usr/bin/env bash
# ab_step.sh — before against after on one GPU: two generated programs (say the same spec from two commits)
# timed alternately, so that both see the same card, clocks and neighbours.
#
#     bash bench/ab_step.sh out/before out/after [ROUNDS]
#
# Each round runs `runtime DIR/model.ptx --bench --steps $STEPS --profile` for A, then for B (ROUNDS, default 2).
# Logs go to $OUT (default /tmp/ab). The table printed last has, per round and program, the graph-replayed
# step median of --bench and, from the op-by-op profile, the total of every phase/kind whose name matches
# $KINDS (default: the attention kernels and the matrix products).
set -u
cd "$(dirname "$0")/.." || exit 1
[ $# -ge 2 ] || { echo "usage: bench/ab_step.sh DIR_A DIR_B [ROUNDS]" >&2; exit 2; }
A=$1 B=$2 ROUNDS=${3:-2}
STEPS=${STEPS:-10}
LOGS=${OUT:-/tmp/ab}
KINDS=${KINDS:-"fwd attn|bwd attn_bwd_dkdv|bwd attn_bwd_dq|fwd matmul|bwd matmul|fwd mla_k|bwd mla_k_bwd"}
for d in "$A" "$B"; do
  [ -f "$d/model.ptx" ] || { echo "ab_step.sh: $d/model.ptx is missing (run bin/gen SPEC -o $d first)" >&2; exit 2; }
done
mkdir -p "$LOGS" || exit 1

rows=()
for r in $(seq 1 "$ROUNDS"); do
  for side in A B; do
    dir=$A; [ "$side" = B ] && dir=$B
    log="$LOGS/ab_${side}_$r.log"
    if ! bin/runtime "$dir/model.ptx" --bench --steps "$STEPS" --profile >"$log" 2>&1; then
      echo "ab_step.sh: $side round $r failed — last lines of $log:"; tail -n 5 "$log" | sed 's/^/    /'
      continue
    fi
    step=$(grep '^BENCH ' "$log" | tail -n 1 | tr ' ' '\n' | sed -n 's/^ms_per_step=//p')
    cells=""
    IFS='|' read -ra ks <<<"$KINDS"
    for k in "${ks[@]}"; do
      # the profile's kind table: | phase kind | ops | ms | share |
      ms=$(awk -F'|' -v k="$k" '{ gsub(/^ +| +$/, "", $2) } $2 == k { gsub(/ /, "", $4); print $4 }' "$log" | head -n 1)
      cells="$cells | ${ms:--}"
    done
    rows+=("| $r | $side ($dir) | $step$cells |")
  done
done

echo
echo "A = $A, B = $B; $STEPS timed steps per run, logs in $LOGS"
header="| round | program | step ms (graph)"
sep="| --- | --- | ---"
IFS='|' read -ra ks <<<"$KINDS"
for k in "${ks[@]}"; do header="$header | $k ms"; sep="$sep | ---"; done
echo "$header |"
echo "$sep |"
printf '%s\n' "${rows[@]}"
