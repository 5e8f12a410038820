#!/usr/bin/env bash
# scripts/sweep_summary.sh OUT/NAME — the results of a sweep (written by gen --sweep and trained by
# scripts/sweep.sh), any time, finished or not:
#   OUT/NAME/summary.csv, summary.md   one row per point: its settings (one column per axis field),
#                                      the last step, final train and validation loss, tok/s (mean
#                                      over the logged steps after the first, which includes the
#                                      warm-up), wall time, and status (done / failed / unfinished /
#                                      not run / stale: a run of an older configuration, not shown)
#   OUT/NAME/loss.png                  every run's loss curves, labelled by point (runtime --plot)
# The Markdown table is also printed. Exit status 1 when the plot could not be drawn.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
root=${1:?usage: scripts/sweep_summary.sh OUT/NAME}
root=${root%/}
[ -f "$root/points.tsv" ] || { echo "sweep_summary: $root/points.tsv missing (not a sweep written by gen --sweep)" >&2; exit 2; }

# The last step, final train loss, final validation loss and mean tok/s of one metrics.jsonl.
metrics() {
  awk 'function num(k,   r) {
         if (!match($0, "\"" k "\"[ \t]*:[ \t]*[-+0-9.eE]+")) return ""
         r = substr($0, RSTART, RLENGTH); sub(/^[^:]*:[ \t]*/, "", r); return r }
       { s = num("step"); t = num("train_loss"); v = num("val_loss"); k = num("tok_per_s")
         if (s != "") step = s; if (t != "") train = t; if (v != "") val = v
         if (k != "") { n++; if (n == 1) first = k; else { sum += k; m++ } } }
       END { tps = m > 0 ? sum / m : (n > 0 ? first : "")
             printf "%s\t%s\t%s\t%s\n", step, train, val, (tps == "" ? "" : sprintf("%.0f", tps)) }' "$1"
}

rows="$root/summary.tsv.tmp"
{
  head -n 1 "$root/points.tsv" | tr -d '\n'
  printf '\tsteps\ttrain_loss\tval_loss\ttok_per_s\twall_s\tstatus\n'
  tail -n +2 "$root/points.tsv" | while IFS= read -r line; do
    p=${line%%$'\t'*}
    run=$root/$p/run
    m=$'\t\t\t'
    wall="" status="not run"
    if [ -d "$run" ] && [ -f "$run/config.json" ] && ! cmp -s "$root/$p/config.json" "$run/config.json"; then
      status=stale # a run of an older configuration of this point (sweep.sh retrains it)
    elif [ -s "$run/metrics.jsonl" ]; then
      m=$(metrics "$run/metrics.jsonl")
    fi
    if [ "$status" = stale ]; then
      :
    elif [ -f "$run/done" ]; then
      status="done"
      wall=$(awk '$1 == "wall_s" { print $2 }' "$run/done")
    elif [ -f "$run/failed" ]; then
      status=failed
    elif [ -d "$run" ]; then
      status=unfinished
    fi
    printf '%s\t%s\t%s\t%s\n' "$line" "$m" "$wall" "$status"
  done
} >"$rows"

# CSV: fields with a comma or a quote are quoted (RFC 4180)
awk -F'\t' '{ for (i = 1; i <= NF; i++) { f = $i
    if (f ~ /[",]/) { gsub(/"/, "\"\"", f); f = "\"" f "\"" }
    printf "%s%s", f, (i < NF ? "," : "\n") } }' "$rows" >"$root/summary.csv.tmp" && mv "$root/summary.csv.tmp" "$root/summary.csv"
# Markdown: losses to 4 decimals
awk -F'\t' 'NR == 1 { for (i = 1; i <= NF; i++) if ($i ~ /_loss$/) loss[i] = 1
                      line = "|"; sep = "|"; for (i = 1; i <= NF; i++) { line = line " " $i " |"; sep = sep " --- |" }
                      print line; print sep; next }
            { line = "|"; for (i = 1; i <= NF; i++) { f = $i; if (loss[i] && f != "") f = sprintf("%.4f", f); gsub(/\|/, "\\|", f); line = line " " f " |" }
              print line }' "$rows" >"$root/summary.md.tmp" && mv "$root/summary.md.tmp" "$root/summary.md"
rm -f "$rows"
cat "$root/summary.md"
echo "summary: $root/summary.csv $root/summary.md"

runs=()
while IFS=$'\t' read -r p _ && IFS= read -r status; do
  [ "$status" != stale ] && [ -s "$root/$p/run/metrics.jsonl" ] && runs+=("$root/$p/run")
done < <(tail -n +2 "$root/summary.csv" | awk -F, '{ print $1 "\t"; print $NF }')
if [ ${#runs[@]} -eq 0 ]; then echo "summary: no run has metrics yet, no plot"; exit 0; fi
title=$(cat "$root/title.txt" 2>/dev/null || basename "$root")
bin/runtime --plot "${runs[@]}" -o "$root/loss.png" --title "$title"
