# tests/t_sweep.sh — sweeps and the compile cache: the NVRTC cache (a second gen does no NVRTC
# work; one changed field changes the key), bad sweep files (clear errors, nothing runs), a small
# CPU sweep end to end (four runs, a four-row table, a PNG), an interrupted sweep resuming with only
# its unfinished points, and runtime --plot.
GEN=bin/gen

# ---- the compile cache (its own directory, so the test starts cold) ----------------------------
NVC="$TMPDIR/sweep_nvrtc_cache"
cgen() { # OUTNAME [ARGS...] — gen gpt2_tiny with -v through the test cache; stderr+stdout
  local o=$1; shift
  MOONFORGE_CACHE=$NVC $GEN specs/gpt2_tiny.lua -o "$TMPDIR/sweep_cache_$o" -v "$@" 2>&1
}
cache_key() { grep -oE 'cache (hit|miss) +[0-9a-f]{16}' <<<"$1" | awk '{print $NF}'; }
c1=$(cgen a)
k1=$(cache_key "$c1")
if grep -q 'cache miss' <<<"$c1" && [ -n "$k1" ] && [ -s "$NVC/$k1/model.ptx" ]; then
  ok "cache: a cold gen runs NVRTC and stores the entry ($k1)"
else
  notok "cache: a cold gen runs NVRTC and stores the entry" "$c1"
fi
t0=$(date +%s%N)
c2=$(cgen b)
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
if grep -q "cache hit  $k1" <<<"$c2" && ! grep -q 'NVRTC [0-9]' <<<"$c2" && cmp -s "$TMPDIR/sweep_cache_a/model.ptx" "$TMPDIR/sweep_cache_b/model.ptx" &&
  cmp -s "$TMPDIR/sweep_cache_a/model.cubin" "$TMPDIR/sweep_cache_b/model.cubin" && cmp -s "$TMPDIR/sweep_cache_a/kernels.txt" "$TMPDIR/sweep_cache_b/kernels.txt"; then
  ok "cache: a second gen of the same spec skips NVRTC, same PTX/cubin/kernels.txt (${ms} ms)"
else
  notok "cache: a second gen of the same spec skips NVRTC" "$c2"
fi
# (the time is printed, not asserted: that the hit skips NVRTC is what the check above proves; a wall-clock
# bound would only measure how busy the CI machine is)
c3=$(cgen c --set model.n_layer=3)
k3=$(cache_key "$c3")
if grep -q 'cache miss' <<<"$c3" && [ -n "$k3" ] && [ "$k3" != "$k1" ]; then ok "cache: changing one field (model.n_layer) changes the key ($k3)"
else notok "cache: changing one field changes the key" "$c3"; fi
c4=$(cgen d --set train.lr=3e-3 --set train.steps=7)
if grep -q "cache hit  $k1" <<<"$c4"; then ok "cache: runtime-only fields (train.lr, train.steps) reuse the entry"
else notok "cache: runtime-only fields reuse the entry" "$c4"; fi
if ! ls -d "$NVC"/*.tmp.* >/dev/null 2>&1 && [ "$(ls "$NVC" | wc -l)" -eq 2 ]; then ok "cache: two complete entries, no temporaries left"
else notok "cache: two complete entries, no temporaries left" "$(ls -la "$NVC")"; fi
printf 'tampered\n' >"$NVC/$k1/model.cu"
c5=$(cgen e)
if grep -q "cache miss $k1" <<<"$c5" && cmp -s "$TMPDIR/sweep_cache_a/model.ptx" "$TMPDIR/sweep_cache_e/model.ptx"; then
  ok "cache: an entry whose source does not match is recompiled, not trusted"
else
  notok "cache: an entry whose source does not match is recompiled" "$c5"
fi

# ---- bad sweep files: exit 2, one line naming the file, the line and the axis; nothing written ----
badsweep() { # NAME REGEX FILE
  check_error "bad sweep: $1" 2 "$2" $GEN --sweep "$3" -o "$TMPDIR/sweep_bad"
}
badsweep "unknown field"   '^tests/sweeps/bad_unknown_axis\.lua:5: axis model\.n_heads: unknown field' tests/sweeps/bad_unknown_axis.lua
badsweep "empty axis"      '^tests/sweeps/bad_empty_axis\.lua:5: axis train\.lr: empty'                tests/sweeps/bad_empty_axis.lua
badsweep "wrong type"      '^tests/sweeps/bad_type\.lua:5: axis model\.n_layer: value 2 \("four"\): expected an integer' tests/sweeps/bad_type.lua
badsweep "impossible point" '^tests/sweeps/bad_range\.lua:5: axis model\.n_head, point n_head_7: .*must divide model\.d_model' tests/sweeps/bad_range.lua
badsweep "missing spec files" '^tests/sweeps/bad_missing_spec\.lua:4: axis spec: spec files not found: tests/specs/nope_rope\.lua, tests/specs/nope_alibi\.lua' tests/sweeps/bad_missing_spec.lua
badsweep "unknown common setting" '^tests/sweeps/bad_set\.lua:6: set train\.stepz: unknown field' tests/sweeps/bad_set.lua
badsweep "missing sweep file" 'cannot read sweep .*nope\.lua' tests/sweeps/nope.lua
check_error "bad sweep: the runner stops before training" 2 'axis train\.lr: empty' \
  scripts/sweep.sh tests/sweeps/bad_empty_axis.lua --cpu -o "$TMPDIR/sweep_bad"
if [ ! -e "$TMPDIR/sweep_bad" ]; then ok "bad sweeps write nothing"; else notok "bad sweeps write nothing" "$(ls -R "$TMPDIR/sweep_bad")"; fi

# Every provided sweep validates and generates (programs only: the GPU runs them).
for f in specs/sweeps/*.lua; do
  check "sweep $(basename "$f" .lua) generates every point" $GEN --sweep "$f" -o "$TMPDIR/sweep_provided" --no-compile
done

# ---- a small CPU sweep end to end --------------------------------------------------------------
SW="$TMPDIR/sweep_e2e"
SWR="$SW/tiny"
sweep_log=$(scripts/sweep.sh tests/sweeps/tiny.lua --cpu -o "$SW" 2>&1)
sweep_rc=$?
if [ "$sweep_rc" -eq 0 ]; then ok "sweep: tiny CPU sweep (4 points) runs end to end"; else notok "sweep: tiny CPU sweep runs end to end" "$sweep_log"; fi
nrun=0
for d in "$SWR"/*/run; do [ -f "$d/done" ] && [ -s "$d/metrics.jsonl" ] && [ -s "$d/meta.json" ] && nrun=$((nrun + 1)); done
if [ "$nrun" -eq 4 ]; then ok "sweep: four finished run directories with metrics.jsonl and meta.json"
else notok "sweep: four finished run directories" "$(ls -R "$SWR" 2>&1 | head -40)"; fi
rows_csv=$(tail -n +2 "$SWR/summary.csv" 2>/dev/null | grep -c ',done$')
rows_md=$(grep -c '| done |$' "$SWR/summary.md" 2>/dev/null)
if [ "$rows_csv" = 4 ] && [ "$rows_md" = 4 ] && head -1 "$SWR/summary.csv" | grep -q '^point,model\.n_layer,train\.lr,steps,train_loss,val_loss,tok_per_s,wall_s,status$' &&
  ! awk -F, 'NR > 1 && ($4 != 12 || $5 == "" || $7 == "" || $8 == "") { bad = 1 } END { exit !bad }' "$SWR/summary.csv"; then
  ok "sweep: summary.csv and summary.md have four rows with settings, step 12, loss, tok/s and wall time"
else
  notok "sweep: summary table has four complete rows" "$(cat "$SWR/summary.csv" "$SWR/summary.md" 2>&1)"
fi
if [ -s "$SWR/loss.png" ] && [ "$(head -c 4 "$SWR/loss.png" | od -An -tx1 | tr -d ' \n')" = 89504e47 ]; then ok "sweep: loss.png is a non-empty PNG"
else notok "sweep: loss.png is a non-empty PNG" "$(ls -la "$SWR" 2>&1)"; fi
regen=$($GEN --sweep tests/sweeps/tiny.lua -o "$SW" --no-compile 2>&1)
if [ "$(grep -c ' unchanged$' <<<"$regen")" -eq 4 ] && [ "$(ls "$SWR"/*/run/done | wc -l)" -eq 4 ]; then
  ok "sweep: regenerating an unchanged sweep keeps every program and run"
else
  notok "sweep: regenerating an unchanged sweep keeps every program and run" "$regen"
fi
rerun=$(scripts/sweep.sh tests/sweeps/tiny.lua --cpu -o "$SW" 2>&1)
if [ "$(grep -c ': skip ' <<<"$rerun")" -eq 4 ] && ! grep -q ': train ' <<<"$rerun"; then ok "sweep: rerunning a finished sweep trains nothing"
else notok "sweep: rerunning a finished sweep trains nothing" "$rerun"; fi

# Two workers (as with two GPUs) share the points: each point is trained exactly once.
jobs_log=$(JOBS=2 scripts/sweep.sh tests/sweeps/tiny.lua --cpu -o "$TMPDIR/sweep_jobs" 2>&1)
jobs_rc=$?
if [ "$jobs_rc" -eq 0 ] && [ "$(grep -oE ': train [^ ]+' <<<"$jobs_log" | sort -u | wc -l)" -eq 4 ] &&
  [ "$(grep -c ': train ' <<<"$jobs_log")" -eq 4 ] && [ "$(ls "$TMPDIR"/sweep_jobs/tiny/*/run/done | wc -l)" -eq 4 ]; then
  ok "sweep: two workers train each of the 4 points exactly once"
else
  notok "sweep: two workers train each point exactly once" "$jobs_log"
fi

# A changed configuration makes the old runs stale: they are discarded and retrained.
stale_log=$(JOBS=2 scripts/sweep.sh tests/sweeps/tiny.lua --cpu -o "$TMPDIR/sweep_jobs" --set train.steps=6 2>&1)
if [ "$(grep -c 'old run is discarded' <<<"$stale_log")" -eq 4 ] && [ "$(grep -c ': train ' <<<"$stale_log")" -eq 4 ] &&
  [ "$(awk -F, 'NR > 1 && $4 == 6 && $NF == "done"' "$TMPDIR/sweep_jobs/tiny/summary.csv" | wc -l)" -eq 4 ]; then
  ok "sweep: a changed configuration (--set train.steps=6) retrains every point"
else
  notok "sweep: a changed configuration retrains every point" "$stale_log"
fi

# ---- interrupted: TERM the runner as soon as the first point finishes, then run it again --------
SI="$TMPDIR/sweep_int"
scripts/sweep.sh tests/sweeps/tiny.lua --cpu -o "$SI" --set train.steps=40 >"$TMPDIR/sweep_int1.log" 2>&1 &
spid=$!
for _ in $(seq 1 1200); do
  compgen -G "$SI/tiny/*/run/done" >/dev/null && break
  sleep 0.05
done
kill -TERM "$spid" 2>/dev/null
wait "$spid"
int_rc=$?
mapfile -t done1 < <(cd "$SI/tiny" 2>/dev/null && ls -d */run/done 2>/dev/null | cut -d/ -f1)
sums1=$(cd "$SI/tiny" && for p in "${done1[@]}"; do md5sum "$p/run/metrics.jsonl"; done)
if [ "$int_rc" -eq 130 ] && [ "${#done1[@]}" -ge 1 ] && [ "${#done1[@]}" -lt 4 ] && grep -q 'interrupted' "$TMPDIR/sweep_int1.log" &&
  ! pgrep -f "$SI/tiny/" >/dev/null; then
  ok "sweep: TERM stops the runner and its training (${#done1[@]} of 4 finished)"
else
  notok "sweep: TERM stops the runner and its training" "rc $int_rc, finished: ${done1[*]}; $(cat "$TMPDIR/sweep_int1.log")"
fi
resumed=$(scripts/sweep.sh tests/sweeps/tiny.lua --cpu -o "$SI" --set train.steps=40 2>&1)
res_rc=$?
ntrain=$(grep -c ': train ' <<<"$resumed")
nskip=$(grep -c ': skip ' <<<"$resumed")
retrained=0
for p in "${done1[@]}"; do grep -q ": train $p " <<<"$resumed" && retrained=1; done
if [ "$res_rc" -eq 0 ] && [ "$nskip" -eq "${#done1[@]}" ] && [ "$ntrain" -eq $((4 - ${#done1[@]})) ] && [ "$retrained" -eq 0 ] &&
  [ "$(cd "$SI/tiny" && for p in "${done1[@]}"; do md5sum "$p/run/metrics.jsonl"; done)" = "$sums1" ] &&
  [ "$(ls "$SI"/tiny/*/run/done | wc -l)" -eq 4 ]; then
  ok "sweep: rerun after the interruption trains only the $ntrain unfinished points"
else
  notok "sweep: rerun after the interruption trains only the unfinished points" "finished before: ${done1[*]}
$resumed"
fi

# The summary reads validation losses and wall times too (a fixture: synthetic data has no val set).
SF="$TMPDIR/sweep_fixture"
mkdir -p "$SF/lr_1e-03/run" "$SF/lr_3e-03/run"
printf 'point\ttrain.lr\nlr_1e-03\t0.001\nlr_3e-03\t0.003\n' >"$SF/points.tsv"
printf '{"step": 1, "train_loss": 6.5, "tok_per_s": 900}\n{"step": 2, "train_loss": 6.0, "tok_per_s": 1000, "val_loss": 6.25}\n{"step": 3, "train_loss": 5.5, "tok_per_s": 1200}\n' \
  >"$SF/lr_1e-03/run/metrics.jsonl"
printf 'wall_s 3.50\n' >"$SF/lr_1e-03/run/done"
printf '{"step": 1, "train_loss": 6.4, "tok_per_s": 800}\n' >"$SF/lr_3e-03/run/metrics.jsonl"
printf 'exit 1\n' >"$SF/lr_3e-03/run/failed"
fixture_summary() {
  scripts/sweep_summary.sh "$SF" >/dev/null || return 1
  diff <(printf 'point,train.lr,steps,train_loss,val_loss,tok_per_s,wall_s,status\nlr_1e-03,0.001,3,5.5,6.25,1100,3.50,done\nlr_3e-03,0.003,1,6.4,,800,,failed\n') \
    "$SF/summary.csv" && grep -q '^| lr_1e-03 | 0.001 | 3 | 5.5000 | 6.2500 | 1100 | 3.50 | done |$' "$SF/summary.md"
}
check "sweep summary: last losses, val loss, tok/s after the first step, wall time, status" fixture_summary

# ---- runtime --plot on any runs, and its errors ------------------------------------------------
check "runtime --plot: two runs of different sweeps in one PNG" bin/runtime --plot "$SWR/n_layer_1__lr_1e-03/run" \
  "$SI/tiny/n_layer_2__lr_3e-03/run" -o "$TMPDIR/sweep_plot_two.png" --title "two runs"
check "runtime --plot: the PNG is non-empty" test -s "$TMPDIR/sweep_plot_two.png"
check_error "runtime --plot: a directory without metrics" 1 'sweep_plot_nope/metrics\.jsonl' bin/runtime --plot "$TMPDIR/sweep_plot_nope" -o "$TMPDIR/sweep_plot_x.png"
mkdir -p "$TMPDIR/sweep_plot_badrun" && echo '{"step": 1, "train_loss": oops}' >"$TMPDIR/sweep_plot_badrun/metrics.jsonl"
check_error "runtime --plot: a malformed metrics line names file:line" 1 'sweep_plot_badrun/metrics\.jsonl:1: "train_loss"' \
  bin/runtime --plot "$TMPDIR/sweep_plot_badrun" -o "$TMPDIR/sweep_plot_x.png"
