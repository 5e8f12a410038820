#!/usr/bin/env bash
# Write the golden files of tests/golden/goldens.txt: for each line "NAME SPEC key=value …", run
#     bin/gen SPEC --set key=value … -o TMP/NAME --no-compile
#     $PYTHON tests/reference/decoder_ref.py TMP/NAME/config.json tests/golden/NAME.safetensors
# (tests/reference/parscale_ref.py instead when the config is family qwen2 or has parscale.n > 1)
# and report, at the end, which goldens were made and which could not be (the generator or the reference
# refused the configuration: the first error line is shown). The goldens that work are written either way.
#
#     scripts/make_goldens.sh [NAME …]        (no names: every line of the list)
#
# Environment: PYTHON (default /usr/bin/python3, the one with Debian's python3-torch), GOLDENS (the list,
# default tests/golden/goldens.txt), OUTDIR (default tests/golden), STEPS (AdamW steps, default 10).
# Exit status 0 when every requested golden was made, 1 otherwise, 2 on bad usage.
set -u

cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-/usr/bin/python3}
LIST=${GOLDENS:-tests/golden/goldens.txt}
OUTDIR=${OUTDIR:-tests/golden}
STEPS=${STEPS:-10}
MAX_BYTES=1048576

[ -x bin/gen ] || { echo "make_goldens.sh: bin/gen not found: run make first" >&2; exit 2; }
[ -r "$LIST" ] || { echo "make_goldens.sh: cannot read $LIST" >&2; exit 2; }
"$PY" -c 'import torch, numpy' 2>/dev/null || { echo "make_goldens.sh: $PY cannot import torch and numpy" >&2; exit 2; }
TMP=$(mktemp -d /tmp/make_goldens.XXXXXX) || exit 2
trap 'rm -rf "$TMP"' EXIT

declare -A want=()
for n in "$@"; do want[$n]=1; done

made=() failed=() seen=()
lineno=0
while IFS= read -r line || [ -n "$line" ]; do
  lineno=$((lineno + 1))
  line=${line%%#*}
  read -r -a f <<<"$line"
  [ ${#f[@]} -eq 0 ] && continue
  name=${f[0]}
  if [ ${#f[@]} -lt 2 ]; then
    echo "make_goldens.sh: $LIST:$lineno: expected NAME SPEC [key=value …]" >&2
    exit 2
  fi
  spec=${f[1]}
  if [ ${#want[@]} -gt 0 ] && [ -z "${want[$name]:-}" ]; then continue; fi
  seen+=("$name")
  sets=()
  for kv in "${f[@]:2}"; do
    case $kv in
      *=*) sets+=(--set "$kv") ;;
      *) echo "make_goldens.sh: $LIST:$lineno: $kv is not key=value" >&2; exit 2 ;;
    esac
  done
  out="$OUTDIR/$name.safetensors"
  echo "== $name: bin/gen $spec ${sets[*]}"
  if ! bin/gen "$spec" "${sets[@]}" -o "$TMP/$name" --no-compile >"$TMP/$name.gen.log" 2>&1; then
    failed+=("$name: gen: $(grep -m1 -v '^\s*$' "$TMP/$name.gen.log" | cut -c1-200)")
    echo "   gen failed: $(head -n 1 "$TMP/$name.gen.log" | cut -c1-200)"
    continue
  fi
  ref=tests/reference/decoder_ref.py
  if "$PY" -c 'import json, sys; c = json.load(open(sys.argv[1]))
sys.exit(0 if c.get("family") == "qwen2" or (c.get("parscale") or {}).get("n", 1) > 1 else 1)' "$TMP/$name/config.json"; then
    ref=tests/reference/parscale_ref.py
  fi
  if ! "$PY" "$ref" "$TMP/$name/config.json" "$out" --steps "$STEPS" \
      >"$TMP/$name.ref.log" 2>&1; then
    failed+=("$name: reference: $(tail -n 1 "$TMP/$name.ref.log" | cut -c1-200)")
    echo "   reference failed: $(tail -n 1 "$TMP/$name.ref.log" | cut -c1-200)"
    continue
  fi
  sed -n '3p' "$TMP/$name.ref.log"
  bytes=$(stat -c %s "$out")
  if [ "$bytes" -gt "$MAX_BYTES" ]; then
    echo "   warning: $out is $bytes bytes (over $MAX_BYTES): shrink its overrides"
  fi
  made+=("$name ($bytes bytes)")
done <"$LIST"

for n in "${!want[@]}"; do
  found=0
  for s in "${seen[@]+"${seen[@]}"}"; do [ "$s" = "$n" ] && found=1; done
  [ $found -eq 1 ] || failed+=("$n: not in $LIST")
done

echo
echo "make_goldens.sh: made ${#made[@]}, could not make ${#failed[@]} (list $LIST, out $OUTDIR)"
for m in "${made[@]+"${made[@]}"}"; do echo "  made   $m"; done
for m in "${failed[@]+"${failed[@]}"}"; do echo "  FAILED $m"; done
[ ${#failed[@]} -eq 0 ]
