#!/usr/bin/env bash
# scripts/run.sh SPEC — the main job behind `make run`: generate the program for SPEC, then train
# it with progress lines, on the GPU when there is one and on the CPU reference backend otherwise.
set -euo pipefail
spec=${1:-specs/gpt2_tiny.lua}
steps=${STEPS:-200}
out=out/$(basename "$spec" .lua)
backend=(--cpu) where=CPU
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then backend=() where=GPU; fi
bin/gen "$spec" -o "$out" --set train.steps="$steps"
echo "run: training $out on the $where for $steps steps (synthetic tokens)"
exec bin/runtime "$out/model.ptx" --train --steps "$steps" ${backend[@]+"${backend[@]}"}
