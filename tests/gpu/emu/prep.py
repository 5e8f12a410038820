"""prep.py — turn templates/*.cuh and tests/gpu/test_{kernels,attention_gen,parscale}.cu into host C++ for the CPU
emulator (emu.h): PTX wrappers are swapped for emu_ptx.h, dynamic shared memory for the
emulator's buffer, `<<<…>>>` launches for emu::launch and cuda* calls for emu_cuda* shims.
Usage (from the repository root, no GPU needed):
  python3 tests/gpu/emu/prep.py bin/emu
  g++ -std=c++17 -O1 -w -I/usr/local/cuda/include -I tests/gpu/emu -I bin/emu \
      bin/emu/test_kernels_emu.cpp -o bin/test_kernels_emu
  bin/test_kernels_emu --no-bench          # EMU_CP_EARLY=1 does cp.async copies at issue
  g++ -std=c++17 -O1 -w -I/usr/local/cuda/include -I tests/gpu/emu -I bin/emu \
      bin/emu/test_attention_gen_emu.cpp -o bin/test_attention_gen_emu
  bin/test_attention_gen_emu --small       # small cases only, no benchmark
  make bin/test_decode_emu && bin/test_decode_emu   # the decode kernel (test_decode.cu; Makefile rule)
  (test_parscale likewise: bin/emu/test_parscale_emu.cpp → bin/test_parscale_emu --small)
"""
import re, sys, os
src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
if len(sys.argv) != 2:
    sys.exit('usage: prep.py OUTDIR')
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
def rd(p): return open(p).read()
def wr(p, text):   # only when the text changed (keeps make's timestamps), atomically (make -j)
    if os.path.exists(p) and rd(p) == text: return
    tmp = '%s.%d.tmp' % (p, os.getpid())
    open(tmp, 'w').write(text)
    os.replace(tmp, p)
# templates
for f in os.listdir(src + '/templates'):
    if not f.endswith('.cuh'): continue
    s = rd(src + '/templates/' + f)
    if f == 'common.cuh':
        s = s.replace('#include <cuda_bf16.h>', '#include "emu.h"')
        s2 = re.sub(r'asm\("ex2\.approx\.ftz\.f32 %0, %1;" : "=f"\(y\) : "f"\(x\)\);', 'y = exp2f(x);', s)
        assert s2 != s; s = s2
    if f == 'attention.cuh':
        a = s.index('// ---- PTX wrappers'); b = s.index('// ---- fragment loaders')
        s = s[:a] + '#include "emu_ptx.h"\n' + s[b:]
        s2 = s.replace('extern __shared__ __align__(16) unsigned char mf_att_smem[];', 'unsigned char* mf_att_smem = emu::cur_smem();')
        assert s2.count('emu::cur_smem()') == 3; s = s2
    if f == 'attention_gen.cuh':
        a = s.index('// ---- PTX wrappers'); b = s.index('// ---- fragment loaders')
        s = s[:a] + '#include "emu_ptx_gen.h"\n' + s[b:]
        s2 = s.replace('extern __shared__ __align__(16) unsigned char ag_smem[];', 'unsigned char* ag_smem = emu::cur_smem();')
        assert s2.count('emu::cur_smem()') == 3; s = s2
    if f == 'attention_wg.cuh':
        a = s.index('// ---- PTX wrappers'); b = s.index('// ---- configuration')
        s = s[:a] + '#include "emu_ptx_wg.h"\n' + s[b:]
        s2 = s.replace('extern __shared__ __align__(16) unsigned char wg_smem[];', 'unsigned char* wg_smem = emu::cur_smem();')
        assert s2.count('emu::cur_smem()') == 3; s = s2
    if f == 'parscale.cuh':
        s2 = s.replace('extern __shared__ __align__(16) unsigned char ps_smem[];', 'unsigned char* ps_smem = emu::cur_smem();')
        assert s2.count('emu::cur_smem()') == 2; s = s2
    assert 'asm' not in re.sub(r'//.*', '', s), f
    wr(out + '/' + f, s)
# test programs
def prep_test(name):
  s = rd(src + '/tests/gpu/' + name + '.cu')
  s = s.replace('#include <cuda_runtime.h>', '#include "emu.h"')
  s = re.sub(r'\bcuda(Malloc|Free|Memcpy|GetLastError|DeviceSynchronize|FuncSetAttribute|GetErrorString|GetDevice|GetDeviceProperties|EventCreate|EventDestroy|EventRecord|EventSynchronize|EventElapsedTime|DeviceProp|Event_t|Stream_t)\b', r'emu_cuda\1', s)
  def split_top(t):
      parts, depth, curp = [], 0, ''
      for ch in t:
          if ch in '(<[': depth += 1
          if ch in ')>]': depth -= 1
          if ch == ',' and depth == 0: parts.append(curp); curp = ''
          else: curp += ch
      parts.append(curp)
      return [p.strip() for p in parts]
  def launch(m):
      name, cfg, args = m.group(1), m.group(2), m.group(3)
      c = split_top(cfg)
      g, b = c[0], c[1]
      sm = c[2] if len(c) > 2 else '0'
      return 'emu::launch(dim3(%s), dim3(%s), %s, [&] { %s(%s); });' % (g, b, sm, name, args)
  s, n = re.subn(r'(\w+(?:<[^;<>]*>)?)<<<(.*?)>>>\((.*?)\);', launch, s, flags=re.S)
  print(name + ': launches rewritten:', n, file=sys.stderr)
  assert '<<<' not in s
  wr(out + '/' + name + '_emu.cpp', s)
for t in ('test_kernels', 'test_attention_gen', 'test_decode', 'test_parscale'):
  prep_test(t)
