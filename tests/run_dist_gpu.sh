#!/usr/bin/env bash
# tests/run_dist_gpu.sh — several GPUs on one host (the 2×H200 machine, nvidia-h200-x2): data
# parallelism and ZeRO-1 against one GPU with gradient accumulation, the three ways of starting
# the ranks (mpirun, the torchrun-style variables, --gpus), a rank killed mid-step, resuming a
# checkpoint on the same and a different number of GPUs, and tokens/s of 2 GPUs against 1 (the
# table comes last). Needs bin/ built (`make all`, here or carried) and at least 2 GPUs; about
# 5–8 minutes. The CPU half of these tests is tests/t_dist.sh (`make test`).
#   DIST_PARTS  which parts run (default "functional speed"): functional = (1)-(3) and resume, speed = (4)
set -u
cd "$(dirname "$0")/.."
. tests/lib.sh
export TMPDIR=${TMPDIR_GPU:-$(mktemp -d)}
export NCCL_NVLS_ENABLE=0 # NVLink multicast stays off on these machines (the runtime sets it too)
RT=bin/runtime
T0=$SECONDS
port() { echo $((20000 + RANDOM % 30000)); }
ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
check "at least 2 GPUs ($ngpu)" test "$ngpu" -ge 2
[ -x $RT ] || { notok "bin/runtime built" "run 'make all' first"; summary; exit 1; }
DIST_PARTS=${DIST_PARTS:-"functional speed"}
dpart() { case " $DIST_PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
M124=$TMPDIR/g124
if dpart functional; then

# ---- the models: gpt2_tiny at micro-batch B = 4, once for 2 GPUs (accum 1), once for 1 GPU
# with accum 2 — the same global batch; the synthetic stream hands rank r of W the r-th group of
# accum micro-batches of each step, so both see exactly the same data.
A1=$TMPDIR/tiny_acc1
A2=$TMPDIR/tiny_acc2
TINY=(--set train.batch_size=4 --set train.steps=20 --set train.warmup_steps=3)
check "gen gpt2_tiny, accum 1" bin/gen specs/gpt2_tiny.lua "${TINY[@]}" --set train.grad_accum=1 -o "$A1"
check "gen gpt2_tiny, accum 2" bin/gen specs/gpt2_tiny.lua "${TINY[@]}" --set train.grad_accum=2 -o "$A2"
# the optimizer kernels now take their range from optrange: one GPU still matches the references
check "1 GPU: GPU vs CPU op by op (adamw/sumsq over optrange)" $RT "$A1/model.ptx" --check
check "1 GPU: GPU matches the PyTorch goldens" bash -c "
  bin/gen specs/gpt2_tiny.lua --set model.vocab_size=500 --set train.batch_size=2 -o $TMPDIR/golden >/dev/null &&
  $RT $TMPDIR/golden/model.ptx --golden tests/golden/gpt2_tiny.safetensors --tol 2e-2 --loss-tol 1e-2"

# ---- (1) 2 GPUs × B == 1 GPU × B × accum 2: losses of 20 steps, parameters after 20 steps
losses() { grep -oE '^step [0-9]+/[0-9]+ \| loss [0-9.]+' "$1" | awk '{print $5}'; }
cmp_losses() { # a b tol: every step's loss within tol (relative)
  paste <(losses "$1") <(losses "$2") | awk -v tol="$3" '
    { n++; d = ($1 - $2) / $2; if (d < 0) d = -d; if (d > worst) worst = d; if (d > tol) bad++ }
    END { printf "%d steps, worst relative loss difference %.2e (tol %g)\n", n, worst, tol; exit !(n == 20 && !bad) }'
}
cmp_master() { # a b tol: relative L2 of the f32 master weights (raw files from --dump-master)
  python3 - "$1" "$2" "$3" <<'EOF'
import sys, array, math
def load(p):
    a = array.array('f'); a.frombytes(open(p, 'rb').read()); return a
a, b, tol = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3])
assert len(a) == len(b) and len(a) > 0, (len(a), len(b))
try:
    import numpy as np
    x, y = np.frombuffer(a, np.float32).astype(np.float64), np.frombuffer(b, np.float32).astype(np.float64)
    num, den, same = float(((x - y) ** 2).sum()), float((y ** 2).sum()), bool((x == y).all())
except ImportError:
    num = sum((p - q) ** 2 for p, q in zip(a, b)); den = sum(q * q for q in b); same = a == b
rel = math.sqrt(num / den)
print(f"{len(a)} weights, relative L2 difference {rel:.3e} (tol {tol:g}){' — bit-identical' if same else ''}")
sys.exit(0 if rel <= tol else 1)
EOF
}
TRAIN=(--train --steps 20 --log-every 1)
check "1 GPU, accum 2 (the reference)" bash -c "$RT $A2/model.ptx ${TRAIN[*]} --dump-master $TMPDIR/ref.f32 >$TMPDIR/ref.log 2>&1 || { cat $TMPDIR/ref.log; exit 1; }"
# several buckets even for the tiny model (1 MiB each), so the overlapped bucket schedule is what runs
for mode in dp zero; do
  # ZeRO-1 is the default on several GPUs: no flag for it, and the log must say so
  z="--zero 0" want="data parallel"; [ $mode = zero ] && z="" want="ZeRO-1 shard"
  name="2 GPUs, $([ $mode = zero ] && echo "ZeRO-1 (the default)" || echo "plain data parallel (--zero 0)")"
  check "$name: trains (--gpus 2)" bash -c "MF_DIST_BUCKET_MB=1 $RT $A1/model.ptx ${TRAIN[*]} $z --gpus 2 \
    --dump-master $TMPDIR/$mode.f32 >$TMPDIR/$mode.log 2>&1 || { cat $TMPDIR/$mode.log; exit 1; }
    grep -E '^gpu:|\] gpu:' $TMPDIR/$mode.log; grep -q '$want' $TMPDIR/$mode.log"
  check "$name: losses of 20 steps == 1 GPU accum 2 (within 2%)" cmp_losses "$TMPDIR/$mode.log" "$TMPDIR/ref.log" 2e-2
  check "$name: parameters after 20 steps == 1 GPU accum 2 (relative L2 <= 1e-2)" cmp_master "$TMPDIR/$mode.f32" "$TMPDIR/ref.f32" 1e-2
  check "$name: rank 1 holds the same parameters as rank 0" cmp_master "$TMPDIR/$mode.f32.rank1" "$TMPDIR/$mode.f32" 1e-5
done

# ---- (2) the launchers: mpirun, the torchrun-style variables (two processes), --gpus
short=(--train --steps 10 --log-every 5)
ran_ok() { # log, how the id went: a finished run of 2 ranks
  grep -q '^done: 10 steps' "$1" && grep -q "rank 0 of 2 (.*NCCL id via $2" "$1" || { cat "$1"; return 1; }
}
if command -v mpirun >/dev/null; then
  mpi_run() {
    timeout 300 mpirun --allow-run-as-root -np 2 $RT "$A1/model.ptx" "${short[@]}" >"$TMPDIR/mpi.log" 2>&1 || { cat "$TMPDIR/mpi.log"; return 1; }
    ran_ok "$TMPDIR/mpi.log" mpi
  }
  check "mpirun -np 2: trains, the NCCL id through MPI_Bcast" mpi_run
else
  notok "mpirun -np 2" "mpirun is not on PATH"
fi
tcp_run() {
  local p; p=$(port)
  RANK=1 LOCAL_RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$p timeout 300 $RT "$A1/model.ptx" "${short[@]}" >"$TMPDIR/tcp1.log" 2>&1 &
  local pid=$!
  RANK=0 LOCAL_RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$p timeout 300 $RT "$A1/model.ptx" "${short[@]}" >"$TMPDIR/tcp0.log" 2>&1 || { cat "$TMPDIR/tcp0.log" "$TMPDIR/tcp1.log"; return 1; }
  wait $pid || { cat "$TMPDIR/tcp1.log"; return 1; }
  ran_ok "$TMPDIR/tcp0.log" tcp
}
check "RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT, two processes: trains, the id over TCP" tcp_run
gpus_run() {
  timeout 300 $RT "$A1/model.ptx" "${short[@]}" --gpus 2 >"$TMPDIR/gpus.log" 2>&1 || { cat "$TMPDIR/gpus.log"; return 1; }
  ran_ok "$TMPDIR/gpus.log" tcp && grep -q '^\[rank 1\] gpu: .*device 1' "$TMPDIR/gpus.log"
}
check "--gpus 2: trains, rank 1 on device 1" gpus_run
file_run() {
  local f=$TMPDIR/nccl.id
  rm -f "$f"
  RANK=1 WORLD_SIZE=2 timeout 300 $RT "$A1/model.ptx" "${short[@]}" --nccl-id-file "$f" >"$TMPDIR/file1.log" 2>&1 &
  local pid=$!
  RANK=0 WORLD_SIZE=2 timeout 300 $RT "$A1/model.ptx" "${short[@]}" --nccl-id-file "$f" >"$TMPDIR/file0.log" 2>&1 || { cat "$TMPDIR/file0.log" "$TMPDIR/file1.log"; return 1; }
  wait $pid || { cat "$TMPDIR/file1.log"; return 1; }
  ran_ok "$TMPDIR/file0.log" file && [ ! -e "$f" ]
}
check "--nccl-id-file: trains, rank 0 removes the file once the communicator is up" file_run

# ---- (3) a rank killed mid-step: the survivor stops with a message naming it, well within 60 s
M124=$TMPDIR/g124
check "gen gpt2_124m" bin/gen specs/gpt2_124m.lua --set train.warmup_steps=10 -o "$M124"
# wait_dead PID SECONDS: 0 when PID has exited within SECONDS (then its status is in $DEAD_RC)
wait_dead() {
  local i
  for i in $(seq $(($2 * 10))); do
    kill -0 "$1" 2>/dev/null || { wait "$1"; DEAD_RC=$?; return 0; }
    sleep 0.1
  done
  kill -9 "$1" 2>/dev/null; wait "$1" 2>/dev/null
  return 1
}
wait_step() { # log: until rank 0 logged step 5 (training is under way)
  local i
  for i in $(seq 1200); do grep -q '^step [5-9][0-9]*/' "$1" && return 0; sleep 0.1; done
  return 1
}
kill_test() { # victim (0 or 1), extra args...: TCP launch of two ranks of gpt2_124m, kill -9 one mid-run
  local victim=$1 p t v s; shift
  p=$(port)
  local long=(--train --steps 100000 --log-every 1 "$@")
  RANK=0 LOCAL_RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$p $RT "$M124/model.ptx" "${long[@]}" >"$TMPDIR/k0.log" 2>&1 &
  local p0=$!
  RANK=1 LOCAL_RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$p $RT "$M124/model.ptx" "${long[@]}" >"$TMPDIR/k1.log" 2>&1 &
  local p1=$!
  if ! wait_step "$TMPDIR/k0.log"; then kill -9 $p0 $p1; wait; cat "$TMPDIR/k0.log" "$TMPDIR/k1.log"; return 1; fi
  if [ "$victim" = 0 ]; then v=$p0; s=$p1; sl=$TMPDIR/k1.log; else v=$p1; s=$p0; sl=$TMPDIR/k0.log; fi
  t=$SECONDS
  kill -9 $v
  wait $v 2>/dev/null
  if ! wait_dead $s 90; then echo "the survivor was still running 90 s after the kill"; tail -5 "$sl"; return 1; fi
  local took=$((SECONDS - t))
  echo "survivor exit status $DEAD_RC after ${took}s:"; grep -E 'runtime: rank' "$sl"
  [ "$DEAD_RC" -ne 0 ] && [ "$took" -le 60 ] && grep -qE "runtime: rank $((1 - victim)): .*(rank $victim exited or was killed|NCCL (error|timeout)|CUDA error)" "$sl"
}
check "rank 1 killed mid-step (TCP launch): rank 0 names it and exits non-zero within 60 s" kill_test 1
check "rank 0 killed mid-step (TCP launch): rank 1 names it and exits non-zero within 60 s" kill_test 0
kill_file_test() { # no TCP connections (the id through a file): the NCCL watchdog's time limit stops the survivor
  rm -f "$TMPDIR/k.id"
  local long=(--train --steps 100000 --log-every 1 --nccl-id-file "$TMPDIR/k.id")
  RANK=0 LOCAL_RANK=0 WORLD_SIZE=2 $RT "$M124/model.ptx" "${long[@]}" >"$TMPDIR/kf0.log" 2>&1 &
  local p0=$!
  RANK=1 LOCAL_RANK=1 WORLD_SIZE=2 $RT "$M124/model.ptx" "${long[@]}" >"$TMPDIR/kf1.log" 2>&1 &
  local p1=$!
  if ! wait_step "$TMPDIR/kf0.log"; then kill -9 $p0 $p1; wait; cat "$TMPDIR/kf0.log" "$TMPDIR/kf1.log"; return 1; fi
  local t=$SECONDS
  kill -9 $p1
  wait $p1 2>/dev/null
  if ! wait_dead $p0 90; then echo "rank 0 was still running 90 s after the kill"; tail -5 "$TMPDIR/kf0.log"; return 1; fi
  local took=$((SECONDS - t))
  echo "rank 0 exit status $DEAD_RC after ${took}s:"; grep -E 'runtime: rank' "$TMPDIR/kf0.log"
  [ "$DEAD_RC" -ne 0 ] && [ "$took" -le 60 ] && grep -qE 'runtime: rank 0: (NCCL (error|timeout)|CUDA error) in step' "$TMPDIR/kf0.log"
}
check "rank 1 killed, no TCP star (--nccl-id-file): rank 0 stops on the NCCL time limit (30 s) within 60 s" kill_file_test
kill_gpus_test() {
  $RT "$M124/model.ptx" --train --steps 100000 --log-every 1 --gpus 2 >"$TMPDIR/kg.log" 2>&1 &
  local parent=$! child="" c
  if ! wait_step "$TMPDIR/kg.log"; then kill $parent; wait; cat "$TMPDIR/kg.log"; return 1; fi
  for c in $(pgrep -P $parent); do tr '\0' '\n' <"/proc/$c/environ" 2>/dev/null | grep -qx 'RANK=1' && child=$c; done
  [ -n "$child" ] || { echo "rank 1 not found"; kill $parent; wait; return 1; }
  local t=$SECONDS
  kill -9 "$child"
  if ! wait_dead $parent 90; then echo "--gpus still running 90 s after the kill"; return 1; fi
  local took=$((SECONDS - t))
  grep -E 'runtime --gpus|runtime: rank' "$TMPDIR/kg.log"
  [ "$DEAD_RC" -eq 1 ] && [ "$took" -le 60 ] && grep -q 'runtime --gpus: rank 1 (pid [0-9]*) was killed by signal 9' "$TMPDIR/kg.log"
}
check "--gpus 2, rank 1 killed mid-step: the launcher names it, stops rank 0, exits 1 within 60 s" kill_gpus_test

# ---- resume: a ZeRO-1 checkpoint (gathered by rank 0) continues exactly on 2 GPUs, and on 1 GPU
resume_test() {
  local R1=$TMPDIR/run_z R2=$TMPDIR/run_z2 R3=$TMPDIR/run_z3
  rm -rf "$R1" "$R2" "$R3"
  $RT "$A1/model.ptx" --train --steps 10 --log-every 5 --save-every 5 --run-dir "$R1" --zero 1 --gpus 2 \
    --dump-master "$TMPDIR/z10.f32" >"$TMPDIR/r1.log" 2>&1 || { cat "$TMPDIR/r1.log"; return 1; }
  cp -r "$R1" "$R2"
  rm -rf "$R2/ckpt/step_000010"
  printf 'step_000005\n' >"$R2/ckpt/latest"
  cp -r "$R2" "$R3"
  $RT "$A1/model.ptx" --train --steps 10 --log-every 5 --run-dir "$R2" --resume --zero 1 --gpus 2 \
    --dump-master "$TMPDIR/z10b.f32" >"$TMPDIR/r2.log" 2>&1 || { cat "$TMPDIR/r2.log"; return 1; }
  grep -q 'resume: .*step_000005' "$TMPDIR/r2.log" || { cat "$TMPDIR/r2.log"; return 1; }
  cmp_master "$TMPDIR/z10b.f32" "$TMPDIR/z10.f32" 1e-6 || return 1
  # a different number of GPUs (and no ZeRO): the same state, the stream continues (see README)
  $RT "$A1/model.ptx" --train --steps 10 --log-every 5 --run-dir "$R3" --resume >"$TMPDIR/r3.log" 2>&1 || { cat "$TMPDIR/r3.log"; return 1; }
  grep -q '^done: 5 steps' "$TMPDIR/r3.log" || { cat "$TMPDIR/r3.log"; return 1; }
}
check "resume: a 2-GPU ZeRO-1 checkpoint continues on 2 GPUs as if uninterrupted (rel <= 1e-6), and on 1 GPU" resume_test

fi # functional

# ---- (4) speed: tokens/s of 2 GPUs against 1, same run, same plan (the table is printed last)
# each row goes to a file: check runs the test in a subshell, so an array would not survive it
ROWS_FILE=$TMPDIR/speed_rows.md
: >"$ROWS_FILE"
bench_tps() { # log: the BENCH line's tok/s
  grep -oE '^BENCH tok_per_s=[0-9.]+' "$1" | tail -1 | cut -d= -f2
}
speed() { # name dir
  local name=$1 d=$2 one two zero # two: the default (ZeRO-1), zero: plain DP (--zero 0)
  $RT "$d/model.ptx" --bench --steps 30 >"$TMPDIR/b1_$name.log" 2>&1 || { cat "$TMPDIR/b1_$name.log"; return 1; }
  $RT "$d/model.ptx" --bench --steps 30 --gpus 2 >"$TMPDIR/b2_$name.log" 2>&1 || { cat "$TMPDIR/b2_$name.log"; return 1; }
  $RT "$d/model.ptx" --bench --steps 30 --gpus 2 --zero 0 >"$TMPDIR/bz_$name.log" 2>&1 || { cat "$TMPDIR/bz_$name.log"; return 1; }
  one=$(bench_tps "$TMPDIR/b1_$name.log"); two=$(bench_tps "$TMPDIR/b2_$name.log"); zero=$(bench_tps "$TMPDIR/bz_$name.log")
  [ -n "$one" ] && [ -n "$two" ] && [ -n "$zero" ] || { tail -3 "$TMPDIR"/b?_"$name".log; return 1; }
  awk -v n="$name" -v a="$one" -v b="$two" -v z="$zero" 'BEGIN {
    printf "| %s | %.0f | %.0f | %.2f× | %.0f | %.2f× |\n", n, a, b, b / a, z, z / a }' >>"$ROWS_FILE"
  awk -v a="$one" -v b="$two" 'BEGIN { printf "2 GPUs / 1 GPU = %.3f (target >= 1.9)\n", b / a; exit !(b / a >= 1.9) }'
}
if dpart speed; then
[ -f "$M124/model.ptx" ] || check "gen gpt2_124m" bin/gen specs/gpt2_124m.lua --set train.warmup_steps=10 -o "$M124"
check "speed gpt2_124m: 2 GPUs (default) >= 1.9x the tokens/s of 1" speed gpt2_124m "$M124"
SW=$TMPDIR/swamla_small
if [ -f specs/swamla_small.lua ] && bin/gen specs/swamla_small.lua -o "$SW" >"$TMPDIR/gen_sw.log" 2>&1; then
  check "speed swamla_small: 2 GPUs (default) >= 1.9x the tokens/s of 1" speed swamla_small "$SW"
else
  notok "speed swamla_small: gen" "$(tail -5 "$TMPDIR/gen_sw.log" 2>/dev/null)"
fi

fi # speed
echo
echo "## tokens/s, $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), bench of 30 steps after 5 warm-up (median)"
echo
echo "| model | 1 GPU tok/s | 2 GPUs (ZeRO-1, default) tok/s | speed-up | 2 GPUs plain DP (--zero 0) tok/s | speed-up |"
echo "| --- | --- | --- | --- | --- | --- |"
cat "$ROWS_FILE"
echo
echo "($((SECONDS - T0)) s in all)"
summary
