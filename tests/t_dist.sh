# tests/t_dist.sh — several processes without a GPU: the launchers' environment → rank/world/local
# rank, the NCCL id exchange between local processes (TCP over loopback, an id file, MPI through a
# stand-in libmpi), the liveness star naming a dead rank, the `--gpus N` launcher (prefixes, a
# failed or killed rank stops the rest and is named), the gradient buckets and ZeRO-1 shards of a
# plan, and the NCCL declarations against nccl.h. The GPU half is tests/run_dist_gpu.sh.
RT=bin/runtime
DT=$TMPDIR/dist
mkdir -p "$DT"
port() { echo $((20000 + RANDOM % 30000)); }
# run a command with a clean launcher environment plus the given VAR=value words
denv() { env -u RANK -u WORLD_SIZE -u LOCAL_RANK -u MASTER_ADDR -u MASTER_PORT -u OMPI_COMM_WORLD_RANK \
  -u OMPI_COMM_WORLD_SIZE -u OMPI_COMM_WORLD_LOCAL_RANK -u SLURM_PROCID -u SLURM_NTASKS -u SLURM_STEP_NUM_TASKS \
  -u SLURM_LOCALID -u SLURM_JOB_ID -u TORCHELASTIC_RUN_ID "$@"; }

# ---- the environment of each launcher
env_is() { # expected-line VAR=value...
  local want=$1 out; shift
  out=$(denv "$@" $RT --dist-selftest env 2>&1) || { echo "$out"; return 1; }
  [ "$out" = "$want" ] || { echo "got '$out', want '$want'"; return 1; }
}
check "env: no launcher -> rank 0 of 1" env_is "dist-env: rank 0 world 1 local 0 launcher single"
check "env: mpirun (OMPI_COMM_WORLD_*)" env_is "dist-env: rank 3 world 4 local 1 launcher mpirun" \
  OMPI_COMM_WORLD_RANK=3 OMPI_COMM_WORLD_SIZE=4 OMPI_COMM_WORLD_LOCAL_RANK=1
check "env: srun (SLURM_PROCID/STEP_NUM_TASKS/LOCALID)" env_is "dist-env: rank 5 world 8 local 1 launcher slurm" \
  SLURM_PROCID=5 SLURM_STEP_NUM_TASKS=8 SLURM_LOCALID=1
check "env: a Slurm batch script outside srun is not a world" env_is "dist-env: rank 0 world 1 local 0 launcher single" \
  SLURM_PROCID=0 SLURM_NTASKS=8 SLURM_LOCALID=0
check "env: torchrun-style RANK/WORLD_SIZE/LOCAL_RANK" env_is "dist-env: rank 2 world 4 local 0 launcher torchrun" \
  RANK=2 WORLD_SIZE=4 LOCAL_RANK=0
check "env: LOCAL_RANK defaults to RANK" env_is "dist-env: rank 1 world 2 local 1 launcher torchrun" RANK=1 WORLD_SIZE=2
check "env: mpirun's variables win over RANK/WORLD_SIZE" env_is "dist-env: rank 1 world 2 local 1 launcher mpirun" \
  OMPI_COMM_WORLD_RANK=1 OMPI_COMM_WORLD_SIZE=2 OMPI_COMM_WORLD_LOCAL_RANK=1 RANK=0 WORLD_SIZE=8
check_error "env: RANK without WORLD_SIZE is refused" 1 'RANK is set but WORLD_SIZE is not' denv RANK=1 $RT --dist-selftest env
check_error "env: RANK >= WORLD_SIZE is refused" 1 'RANK=2 and WORLD_SIZE=2' denv RANK=2 WORLD_SIZE=2 $RT --dist-selftest env
check_error "env: a non-integer is refused" 1 'OMPI_COMM_WORLD_SIZE=two' \
  denv OMPI_COMM_WORLD_RANK=0 OMPI_COMM_WORLD_SIZE=two $RT --dist-selftest env

# ---- the id exchange
blobs_agree() { # N LOG...: N lines "dist-selftest: ... blob H" with one H across all logs
  local n=$1 got hs; shift
  got=$(cat "$@" | grep -c 'dist-selftest: rank')
  hs=$(cat "$@" | grep -oE 'blob [0-9a-f]{16}' | sort -u | wc -l)
  [ "$got" -eq "$n" ] && [ "$hs" -eq 1 ] || { cat "$@"; echo "($got selftest lines, $hs distinct blobs)"; return 1; }
}
tcp_pair() { # rank 1 starts first: it must retry until rank 0 listens
  local p; p=$(port)
  denv RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$p timeout 30 $RT --dist-selftest exchange >"$DT/t1" 2>&1 &
  local pid=$!
  sleep 0.5
  denv RANK=0 WORLD_SIZE=2 MASTER_ADDR=localhost MASTER_PORT=$p timeout 30 $RT --dist-selftest exchange >"$DT/t0" 2>&1 || { cat "$DT/t0"; return 1; }
  wait $pid || { cat "$DT/t1"; return 1; }
  grep -q 'id via tcp' "$DT/t0" && blobs_agree 2 "$DT/t0" "$DT/t1"
}
check "TCP: two local processes exchange the 128-byte id (rank 1 first, retrying)" tcp_pair
tcp_four() {
  local p pids=() r; p=$(port)
  for r in 3 2 1; do
    denv RANK=$r WORLD_SIZE=4 MASTER_ADDR=127.0.0.1 MASTER_PORT=$p timeout 30 $RT --dist-selftest exchange >"$DT/f$r" 2>&1 &
    pids+=($!)
  done
  denv RANK=0 WORLD_SIZE=4 MASTER_ADDR=127.0.0.1 MASTER_PORT=$p timeout 30 $RT --dist-selftest exchange >"$DT/f0" 2>&1 || { cat "$DT/f0"; return 1; }
  for r in "${pids[@]}"; do wait "$r" || { cat "$DT"/f?; return 1; }; done
  blobs_agree 4 "$DT"/f0 "$DT"/f1 "$DT"/f2 "$DT"/f3
}
check "TCP: four processes, one id" tcp_four
check_error "TCP: rank 1 without rank 0 stops with a clear error (MF_DIST_INIT_TIMEOUT=2)" 1 \
  'rank 1: cannot reach rank 0 at 127\.0\.0\.1:[0-9]+ within 2 s' \
  denv RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$(port) MF_DIST_INIT_TIMEOUT=2 timeout 20 $RT --dist-selftest exchange
check_error "TCP: rank 0 names the ranks that never came" 1 'only 0 of the 2 other ranks .*missing: 1, 2' \
  denv RANK=0 WORLD_SIZE=3 MASTER_ADDR=127.0.0.1 MASTER_PORT=$(port) MF_DIST_INIT_TIMEOUT=2 timeout 20 $RT --dist-selftest exchange
tcp_world_mismatch() {
  local p out; p=$(port)
  denv RANK=1 WORLD_SIZE=3 MASTER_ADDR=127.0.0.1 MASTER_PORT=$p timeout 30 $RT --dist-selftest exchange >"$DT/w1" 2>&1 &
  out=$(denv RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$p MF_DIST_INIT_TIMEOUT=10 timeout 30 $RT --dist-selftest exchange 2>&1)
  wait
  grep -q 'rank 1 of a world of 3, but this run has 2 ranks' <<<"$out" && grep -q 'different world size' "$DT/w1" ||
    { echo "$out"; cat "$DT/w1"; return 1; }
}
check "TCP: a rank of another world size is refused on both sides" tcp_world_mismatch
check_error "no way to exchange the id is a clear error" 1 'set MASTER_ADDR and MASTER_PORT.*--nccl-id-file' \
  denv RANK=1 WORLD_SIZE=2 $RT --dist-selftest exchange

id_file_pair() {
  local f=$DT/ncclid
  rm -f "$f"
  denv RANK=1 WORLD_SIZE=2 timeout 30 $RT --dist-selftest exchange --nccl-id-file "$f" >"$DT/i1" 2>&1 &
  local pid=$!
  sleep 0.3
  denv RANK=0 WORLD_SIZE=2 timeout 30 $RT --dist-selftest exchange --nccl-id-file "$f" >"$DT/i0" 2>&1 || { cat "$DT/i0"; return 1; }
  wait $pid || { cat "$DT/i1"; return 1; }
  grep -q 'id via file' "$DT/i1" && blobs_agree 2 "$DT/i0" "$DT/i1"
}
check "id file: rank 0 writes it atomically, rank 1 polls and reads the same id" id_file_pair
check_error "id file: one from a run of another size is not taken (clear error at the time limit)" 1 \
  'holds the id of a run of 2 ranks, not 3' \
  denv RANK=1 WORLD_SIZE=3 MF_DIST_INIT_TIMEOUT=1 $RT --dist-selftest exchange --nccl-id-file "$DT/ncclid"
check_error "id file: one from another Slurm job is not taken" 1 'holds the id of another job' \
  denv RANK=1 WORLD_SIZE=2 SLURM_JOB_ID=4242 MF_DIST_INIT_TIMEOUT=1 $RT --dist-selftest exchange --nccl-id-file "$DT/ncclid"

# MPI: a stand-in for OpenMPI's libmpi.so.40 with the same entry points and handles (MPI_Bcast goes
# through a file), so that the dlopen path, the symbols and the argument order are exercised.
cat >"$DT/fakempi.c" <<'EOF'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
char ompi_mpi_comm_world[64], ompi_mpi_byte[64];
static int inited;
static int var(const char *n) { const char *s = getenv(n); return s ? atoi(s) : -1; }
int MPI_Initialized(int *f) { *f = inited; return 0; }
int MPI_Init(int *argc, char ***argv) { (void)argc; (void)argv; inited = 1; return 0; }
int MPI_Comm_rank(void *c, int *r) { *r = c == ompi_mpi_comm_world ? var("OMPI_COMM_WORLD_RANK") : -1; return 0; }
int MPI_Comm_size(void *c, int *s) { *s = c == ompi_mpi_comm_world ? var("OMPI_COMM_WORLD_SIZE") : -1; return 0; }
int MPI_Finalize(void) { inited = 0; return 0; }
int MPI_Bcast(void *buf, int n, void *type, int root, void *comm) {
  char path[4096], tmp[4200];
  if (type != ompi_mpi_byte || comm != ompi_mpi_comm_world || root != 0 || !inited) return 1;
  snprintf(path, sizeof path, "%s/bcast", getenv("FAKE_MPI_DIR"));
  if (var("OMPI_COMM_WORLD_RANK") == 0) {
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f || fwrite(buf, 1, (size_t)n, f) != (size_t)n || fclose(f) || rename(tmp, path)) return 1;
    return 0;
  }
  for (int i = 0; i < 300; i++, usleep(20000)) {
    FILE *f = fopen(path, "rb");
    if (!f) continue;
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    if (got == (size_t)n) return 0;
  }
  return 1;
}
EOF
mpi_fake() {
  gcc -shared -fPIC -o "$DT/libmpi.so.40" "$DT/fakempi.c" || return 1
  rm -f "$DT/bcast"
  local e=(MF_MPI_LIB="$DT/libmpi.so.40" FAKE_MPI_DIR="$DT" OMPI_COMM_WORLD_SIZE=2)
  denv "${e[@]}" OMPI_COMM_WORLD_RANK=1 OMPI_COMM_WORLD_LOCAL_RANK=1 timeout 30 $RT --dist-selftest exchange >"$DT/m1" 2>&1 &
  local pid=$!
  denv "${e[@]}" OMPI_COMM_WORLD_RANK=0 OMPI_COMM_WORLD_LOCAL_RANK=0 timeout 30 $RT --dist-selftest exchange >"$DT/m0" 2>&1 || { cat "$DT/m0"; return 1; }
  wait $pid || { cat "$DT/m1"; return 1; }
  grep -q 'launcher\|mpirun): id via mpi' "$DT/m0" && blobs_agree 2 "$DT/m0" "$DT/m1"
}
check "MPI: under mpirun's variables the id goes through MPI_Bcast of libmpi.so.40 (dlopen)" mpi_fake
check_error "MPI: no libmpi and no MASTER_ADDR is a clear error" 1 'started by mpirun but cannot load OpenMPI' \
  denv MF_MPI_LIB=/nonexistent/libmpi.so.40 OMPI_COMM_WORLD_RANK=1 OMPI_COMM_WORLD_SIZE=2 $RT --dist-selftest exchange

# ---- a rank dies: the others name it (TCP star), the --gpus launcher stops the rest
star_names_dead() {
  local p; p=$(port)
  local e=(WORLD_SIZE=3 MASTER_ADDR=127.0.0.1 MASTER_PORT=$p MF_DIST_SELFTEST_FAIL=1 MF_DIST_SELFTEST_HOLD=20)
  local t0=$SECONDS
  denv "${e[@]}" RANK=1 timeout 30 $RT --dist-selftest exchange >"$DT/s1" 2>&1 &
  denv "${e[@]}" RANK=2 timeout 30 $RT --dist-selftest exchange >"$DT/s2" 2>&1 &
  denv "${e[@]}" RANK=0 timeout 30 $RT --dist-selftest exchange >"$DT/s0" 2>&1
  local rc0=$?
  wait
  cat "$DT/s0" "$DT/s1" "$DT/s2"
  [ $rc0 -eq 1 ] && grep -q 'rank 0: rank 1 exited or was killed' "$DT/s0" &&
    grep -q 'rank 2: rank 1 exited or was killed (reported by rank 0)' "$DT/s2" && [ $((SECONDS - t0)) -lt 10 ]
}
check "TCP star: rank 1 fails, ranks 0 and 2 name it and stop within seconds" star_names_dead
gpus_three() {
  local out
  out=$(denv $RT --gpus 3 --dist-selftest exchange 2>&1) || { echo "$out"; return 1; }
  echo "$out"
  [ "$(grep -c '^dist-selftest: rank 0 of 3' <<<"$out")" -eq 1 ] &&
    [ "$(grep -cE '^\[rank [12]\] dist-selftest: rank [12] of 3' <<<"$out")" -eq 2 ] &&
    [ "$(grep -oE 'blob [0-9a-f]+' <<<"$out" | sort -u | wc -l)" -eq 1 ]
}
check "--gpus 3: three ranks, one id; the output of ranks 1 and 2 prefixed" gpus_three
gpus_failed_rank() {
  local out rc t0=$SECONDS
  out=$(MF_DIST_SELFTEST_FAIL=2 timeout 60 $RT --gpus 3 --dist-selftest exchange 2>&1); rc=$?
  echo "$out"
  [ $rc -eq 1 ] && grep -q 'runtime --gpus: rank 2 (pid [0-9]*) exited with status 3; stopping the other ranks' <<<"$out" &&
    [ $((SECONDS - t0)) -lt 15 ]
}
check "--gpus: a rank that fails is named, the others are stopped, exit 1" gpus_failed_rank
gpus_killed_rank() {
  local t0=$SECONDS
  MF_DIST_SELFTEST_HOLD=30 $RT --gpus 2 --dist-selftest exchange >"$DT/k" 2>&1 &
  local parent=$! child="" c i
  for i in $(seq 50); do
    for c in $(pgrep -P $parent); do # the launcher's children; rank 1 is the one with RANK=1
      tr '\0' '\n' <"/proc/$c/environ" 2>/dev/null | grep -qx 'RANK=1' && child=$c
    done
    [ -n "$child" ] && grep -q '\[rank 1\] dist-selftest' "$DT/k" && break
    sleep 0.1
  done
  [ -n "$child" ] || { cat "$DT/k"; echo "no rank 1 process"; return 1; }
  kill -9 "$child"
  wait $parent
  local rc=$?
  cat "$DT/k"
  [ $rc -eq 1 ] && grep -q 'rank 1 (pid [0-9]*) was killed by signal 9' "$DT/k" && [ $((SECONDS - t0)) -lt 20 ]
}
check "--gpus: a rank killed with SIGKILL is named, the others are stopped, exit 1" gpus_killed_rank
check_error "--gpus cannot run inside another launcher's world" 1 'cannot run inside a torchrun world of 2' \
  denv RANK=0 WORLD_SIZE=2 $RT --gpus 2 --dist-selftest exchange

# ---- the runtime's own refusals
M=$TMPDIR/dtiny_dist
bin/gen specs/gpt2_tiny.lua -o "$M" --no-compile >/dev/null 2>&1
check_error "several ranks need the GPU backend" 1 'several processes run --train or --bench on the GPU only' \
  denv RANK=0 WORLD_SIZE=2 $RT "$M/model.ptx" --cpu --train
check_error "several ranks do not --check" 1 'several processes run --train or --bench' \
  denv RANK=0 WORLD_SIZE=2 $RT "$M/model.ptx" --check
check_error "--dump-master goes with --train or --bench" 1 'dump-master goes with --train' $RT "$M/model.ptx" --cpu --dump-master "$DT/w"
dump_cpu() {
  denv $RT "$M/model.ptx" --cpu --train --steps 2 --log-every 0 --dump-master "$DT/master.f32" || return 1
  local n want
  n=$(stat -c %s "$DT/master.f32")
  want=$(awk '$1 == "arena" && $2 == "params" {print $3 * 4}' "$M/model.plan")
  [ "$n" = "$want" ] || { echo "dump has $n bytes, want $want"; return 1; }
}
check "--dump-master writes param_elems f32 values" dump_cpu

# ---- the gradient buckets and ZeRO-1 shards of a plan (what gpu.c all-reduces, and when)
# Checked against an independent reading of model.plan: the buckets tile the arena, each is cut at a
# parameter offset, and each one's after_op is the last backward op writing a gradient inside it.
buckets_ok() {
  local out
  out=$(MF_DIST_BUCKET_MB=0.02 $RT "$M/model.ptx" --dist-plan 3) || { echo "$out"; return 1; }
  echo "$out" | head -5
  awk -v plan="$M/model.plan" '
    BEGIN {
      while ((getline l < plan) > 0) {
        n = split(l, f, " ")
        if (f[1] == "arena" && f[2] == "params") total = f[3]
        if (f[1] == "param") { off[f[2]] = f[5]; num[f[2]] = f[4]; isoff[f[5]] = 1 }
        if (f[1] == "op" && f[3] == "bwd") {
          for (i = 14; i <= n && f[i] != "#"; i++)
            if (f[i] ~ /^>[a-z_]+=grad:/) { split(f[i], kv, "grad:"); nw++; wop[nw] = f[2]; wlo[nw] = off[kv[2]]; whi[nw] = off[kv[2]] + num[kv[2]] }
        }
      }
    }
    $1 == "bucket" {
      nb++; lo[nb] = $4; hi[nb] = $6; aft[nb] = $10
      if (nb > 1 && aft[nb] < aft[nb - 1]) { print "buckets not in launch order"; bad = 1 }
      if (!($4 in isoff) && $4 != 0) { print "bucket starts at " $4 ", not a parameter offset"; bad = 1 }
      want = -1
      for (k = 1; k <= nw; k++) if (wlo[k] < hi[nb] && lo[nb] < whi[k] && wop[k] + 0 > want) want = wop[k] + 0
      if (want != aft[nb]) { print "bucket " nb ": after_op " aft[nb] ", last writer " want; bad = 1 }
      covered += hi[nb] - lo[nb]
    }
    $1 == "shard" { ns++; if ($9 % 128) { print "shard start " $9 " not a multiple of 128"; bad = 1 }; shard_cover += $11 - $9 }
    END {
      if (nb < 3) { print "only " nb " buckets"; bad = 1 }
      if (covered != total) { print "buckets cover " covered " of " total; bad = 1 }
      if (ns != 3 || shard_cover != total) { print "shards cover " shard_cover " of " total; bad = 1 }
      exit bad
    }' <<<"$out"
}
check "--dist-plan: buckets tile the arena in backward order, each after its last writer; shards tile it" buckets_ok

# ---- the NCCL declarations of runtime/nccl_api.h against NCCL's own header, where one is installed
NCCL_H=""
for d in /usr/local/cuda/include /usr/include; do [ -f $d/nccl.h ] && NCCL_H=$d && break; done
if [ -n "$NCCL_H" ]; then
  cat >"$DT/nccl_decl.c" <<'EOF'
#include <nccl.h>
#include "nccl_api.h"
_Static_assert(sizeof(MfNcclId) == sizeof(ncclUniqueId) && MF_NCCL_ID_BYTES == NCCL_UNIQUE_ID_BYTES, "id");
_Static_assert((int)MF_NCCL_SUCCESS == (int)ncclSuccess && (int)MF_NCCL_IN_PROGRESS == (int)ncclInProgress, "results");
_Static_assert((int)MF_NCCL_SUM == (int)ncclSum && (int)MF_NCCL_AVG == (int)ncclAvg, "ops");
_Static_assert((int)MF_NCCL_FLOAT32 == (int)ncclFloat32 && (int)MF_NCCL_BFLOAT16 == (int)ncclBfloat16, "types");
_Static_assert(sizeof(ncclResult_t) == sizeof(int) && sizeof(ncclRedOp_t) == sizeof(int) &&
               sizeof(ncclDataType_t) == sizeof(int), "enums are ints");
int main(void) { return 0; }
EOF
  check "nccl_api.h agrees with $NCCL_H/nccl.h (id size, result codes, ops, data types)" \
    gcc -std=c11 -Wall -Werror -fsyntax-only -I"$NCCL_H" -I/usr/local/cuda/include -Iruntime "$DT/nccl_decl.c"
fi
# A real NCCL id (ncclGetUniqueId needs no GPU) through the TCP exchange, where NCCL can be loaded.
NCCL_LIB=""
for l in /usr/lib/x86_64-linux-gnu/libnccl.so.2 /usr/local/cuda/lib64/libnccl.so.2; do [ -f $l ] && NCCL_LIB=$l && break; done
if [ -n "$NCCL_LIB" ]; then
  nccl_id_pair() {
    local p; p=$(port)
    local e=(MF_NCCL_LIB=$NCCL_LIB WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$p)
    denv "${e[@]}" RANK=1 timeout 30 $RT --dist-selftest nccl-id >"$DT/n1" 2>&1 &
    local pid=$!
    denv "${e[@]}" RANK=0 timeout 30 $RT --dist-selftest nccl-id >"$DT/n0" 2>&1 || { cat "$DT/n0"; return 1; }
    wait $pid || { cat "$DT/n1"; return 1; }
    cat "$DT/n0"
    grep -q 'loaded NCCL 2[0-9]*' "$DT/n0" && blobs_agree 2 "$DT/n0" "$DT/n1"
  }
  check "NCCL: $NCCL_LIB loads (dlopen), rank 0's ncclGetUniqueId reaches rank 1" nccl_id_pair
fi
