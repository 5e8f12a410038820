# tests/t_gpu_emu.sh — the GPU kernel tests of tests/gpu/ run on the CPU emulator (tests/gpu/emu/emu.h:
# threads as fibers, mma/ldmatrix/cp.async emulated), so the CUDA templates are checked here without a GPU:
#   test_kernels --xent               cross-entropy on both paths (GPT-2's vocabulary in registers, Qwen2's streamed)
#   test_kernels --mla                MLA's k assembly (mla_k, mla_k_bwd) with the rope key turned, both layouts
#   test_parscale --small             every ParScale kernel (templates/parscale.cuh) against its float64 reference
#   test_attention_gen --small --only prefix cases (learned prefixes, NPRE > 0) and a cross-section of the
#                                     plain variants (MHA, GQA, MLA dims, SWA + ALiBi + RoPE, dropout), so that
#                                     NPRE = 0 stays unchanged, and the dK/dV clusters of grouped kv heads (cl*:
#                                     2 to 7 blocks summing through distributed shared memory) and k given
#                                     rotated (krot: KROT = 1, MLA's layers, both kernel families); the full emulator
#                                     run is `--small` without --only
# The binaries are built by make (bin/test_*_emu, only when their sources changed; needs the CUDA headers).
if [ ! -f "${CUDA_HOME:-/usr/local/cuda}/include/cuda_bf16.h" ]; then
  notok "gpu emulator: build" "needs the CUDA headers (cuda_bf16.h) under \$CUDA_HOME (default /usr/local/cuda)"
elif out=$(make -s bin/test_parscale_emu bin/test_attention_gen_emu bin/test_kernels_emu 2>&1); then
  check "gpu emulator: test_kernels --xent (cross-entropy, row in registers and streamed at V = 151936)" \
    bin/test_kernels_emu --xent
  check "gpu emulator: test_kernels --mla (mla_k, mla_k_bwd with the rope key turned, against float64)" \
    bin/test_kernels_emu --mla
  check "gpu emulator: test_parscale --small (parscale.cuh against float64)" bin/test_parscale_emu --small
  check "gpu emulator: test_attention_gen --small, prefix cases and a cross-section of the plain ones" \
    bin/test_attention_gen_emu --small --only "pre,mha,gqa,mla swa,all,drop all,T=17,cl,krot"
else
  notok "gpu emulator: build (make bin/test_parscale_emu bin/test_attention_gen_emu bin/test_kernels_emu)" "$out"
fi
