# tests/lib.sh — the smallest test harness that does the job: named checks, counted, with the
# output of a failing command shown indented. Sourced by tests/run.sh and tests/run_gpu.sh.
PASS=0
FAIL=0
FAILED=()

ok() { PASS=$((PASS + 1)); echo "ok - $1"; }
notok() {
  FAIL=$((FAIL + 1)); FAILED+=("$1"); echo "not ok - $1"
  [ -n "${2:-}" ] && printf '%s\n' "$2" | tail -n 25 | sed 's/^/    /'
  return 0
}

# check NAME CMD...           — passes when CMD exits 0
check() {
  local name=$1 out; shift
  if out=$("$@" 2>&1); then ok "$name"; else notok "$name" "$out"; fi
}

# check_error NAME CODE REGEX CMD...   — passes when CMD exits with CODE and prints a line
# matching REGEX (the error must say what is wrong, not just fail)
check_error() {
  local name=$1 code=$2 re=$3 out rc; shift 3
  out=$("$@" 2>&1); rc=$?
  if [ "$rc" -eq "$code" ] && grep -qE -- "$re" <<<"$out"; then ok "$name"
  else notok "$name" "expected exit $code and /$re/, got exit $rc:
$out"; fi
}

summary() {
  echo
  [ "$FAIL" -gt 0 ] && printf 'failed: %s\n' "${FAILED[@]}"
  echo "$PASS passed, $FAIL failed"
  [ "$FAIL" -eq 0 ]
}
