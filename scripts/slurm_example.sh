#!/usr/bin/env bash
# scripts/slurm_example.sh — train on several hosts under Slurm, one task per GPU (README "Several
# GPUs"). Submit from the repository root, with bin/ built and the repository on a filesystem every
# node sees:
#   sbatch scripts/slurm_example.sh                          # 2 nodes × 8 GPUs, GPT-2 124M
#   SPEC=specs/gpt2_124m.lua DATA='data/fineweb/train_*.bin' sbatch --nodes=4 scripts/slurm_example.sh
#   RESUME=1 sbatch scripts/slurm_example.sh                 # continue the run from its newest checkpoint
# Extra arguments go to bin/runtime (e.g. --zero 1, --steps N).
#SBATCH --job-name=moonforge
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output=moonforge-%j.out
set -euo pipefail

SPEC=${SPEC:-specs/gpt2_124m.lua}
NAME=$(basename "$SPEC" .lua)
OUT=${OUT:-out/$NAME}                 # the generated program: every task reads it
RUN=${RUN:-runs/$NAME}                # metrics and checkpoints: rank 0 writes, every task reads on --resume
DATA=${DATA:-data/fortunes/train_*.bin}

# Generate once, on the batch host (gen caches compiled programs; a rerun is quick).
bin/gen "$SPEC" -o "$OUT"

# The NCCL id goes from rank 0 to the other tasks over TCP: rank 0's host is the first node of the
# allocation, the port one this job alone uses. (On clusters where nodes cannot open TCP ports to
# each other for this, use `--nccl-id-file "$RUN/nccl.id"` on the shared filesystem instead.)
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}
export MASTER_ADDR MASTER_PORT

# srun gives each task SLURM_PROCID (rank), SLURM_STEP_NUM_TASKS (world size) and SLURM_LOCALID
# (which of its node's GPUs it drives); --kill-on-bad-exit stops the whole step when one task fails.
srun --kill-on-bad-exit=1 bin/runtime "$OUT/model.ptx" --train --data "$DATA" --run-dir "$RUN" \
  --eval-every 250 --save-every 1000 ${RESUME:+--resume} "$@"
