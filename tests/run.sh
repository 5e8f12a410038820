#!/usr/bin/env bash
# tests/run.sh — every test that needs no GPU (what `make test` and CI run).
set -u
cd "$(dirname "$0")/.."
. tests/lib.sh
export TMPDIR=$(mktemp -d)
trap 'rm -rf "$TMPDIR"' EXIT
for t in tests/t_*.sh; do
  echo "# $t"
  . "$t"
done
summary
