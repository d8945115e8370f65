#!/usr/bin/env bash
# --suite modules on one GPU machine, before and after issue 17, on the same candidates: a run that ends within
# 9.5 minutes (each of the two suite runs is capped at about 4 minutes).
#
#   bash benchmarks/gpu_modules.sh          # from the repository root, on the GPU machine
#
# Needs the real corpus at .gpu/repos (zipballs + manifest.jsonl) and the pre-issue code at .gpu/old (both
# git-ignored; with the device tool: carry=[".gpu/repos", ".gpu/old"]). Nothing is downloaded.
#
#   1. OLD: python3 .gpu/old/run_inductor_suite.py --suite modules --per-repo $PER_REPO (its own choice of
#      candidates: the first classes of each repository in path order), one process per module, Inductor's
#      default compile threads, as the issue's measurement ran it;
#   2. NEW: this checkout on exactly the modules OLD ran (--models), persistent workers, parallel cached listing,
#      $COMPILE_THREADS Inductor compile threads per worker; like OLD (which has no sandbox) outside the bubblewrap
#      wall (--unsafe-no-sandbox: persistent workers run only there; the corpus is a fixed, known set), or behind
#      it with SANDBOX=1 (one sandboxed process per module);
#   3. the kernels of both, extracted with get_kernels_from_debug_info.py;
#   4. prints, for each: candidates, skipped (not installed: missing extension / missing package), attempted,
#      compiled (share of the non-skipped candidates), failures by phase (and the top error kinds), kernels,
#      distinct kernels, wall and listing seconds, modules per GPU-minute; then the ratios NEW / OLD.
#
# Settings (environment): PER_REPO=3 WORKERS=12 COMPILE_THREADS=1 TIMEOUT=60 (seconds per module) SANDBOX=0
#   OLD_BUDGET=120 NEW_BUDGET=150 (no module started after that many seconds of a run's pool)
#   OLD_CAP=250 NEW_CAP=210 (hard wall per run: SIGTERM, then the summary of what finished; with the 10 s grace
#   and 2 x 30 s of extraction the script ends within 9.5 minutes whatever happens)
#   OUT=gpu_modules_out WORK=/tmp/modules_gpu REPOS=.gpu/repos
#   EXTRA="..." more options for both runs (a CPU dry run of this script: EXTRA="--gpus none --device cpu
#   --backend none" PER_REPO=1)
# Result files in $OUT (6): summary.txt (what is printed), old_manifest.jsonl, new_manifest.jsonl, old.log,
# new.log, kernels.tar.gz (both runs' kernels.jsonl).
set -uo pipefail
cd "$(dirname "$0")/.."

PER_REPO=${PER_REPO:-3}
WORKERS=${WORKERS:-12}
COMPILE_THREADS=${COMPILE_THREADS:-1}
TIMEOUT=${TIMEOUT:-60}
OLD_BUDGET=${OLD_BUDGET:-120}
NEW_BUDGET=${NEW_BUDGET:-150}
OLD_CAP=${OLD_CAP:-250}
NEW_CAP=${NEW_CAP:-210}
WALL=(--unsafe-no-sandbox)
[ "${SANDBOX:-0}" = 1 ] && WALL=()
OUT=${OUT:-gpu_modules_out}
WORK=${WORK:-/tmp/modules_gpu}
REPOS=${REPOS:-.gpu/repos}
export PYTHONUNBUFFERED=1
OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)
rm -rf "$WORK" && mkdir -p "$WORK"
[ -d "$REPOS" ] && [ -f .gpu/old/run_inductor_suite.py ] || { echo "needs $REPOS and .gpu/old" >&2; exit 2; }

run_capped() {  # run_capped CAP LOG COMMAND...: the command, SIGTERM after CAP seconds (its workers killed too)
    local cap=$1 log=$2; shift 2
    timeout --kill-after=10 -s TERM "$cap" "$@" >"$log" 2>&1
}

# 1. OLD: its own listing (one process) and one worker process per module; fresh compiler caches.
started=$(date +%s.%N)
TRITON_CACHE_DIR=$WORK/cache_old/triton TORCHINDUCTOR_CACHE_DIR=$WORK/cache_old/inductor PYTHONPATH=.gpu/old \
    run_capped "$OLD_CAP" "$OUT/old.log" python3 .gpu/old/run_inductor_suite.py --suite modules --repos "$REPOS" \
    --per-repo "$PER_REPO" --out "$WORK/old" --workers-per-gpu "$WORKERS" --timeout "$TIMEOUT" \
    --time-budget "$OLD_BUDGET" ${EXTRA:-} -q
echo "old: exit status $? after $(python3 -c "import time; print(round(time.time() - $started))") s"
echo "$started $(date +%s.%N)" >"$WORK/old_times"

# 2. NEW on the modules OLD ran (its own --per-repo choice if OLD ran none).
models=$(python3 - "$WORK/old" <<'EOF'
import glob, json, os, sys
names = {}
for path in sorted(glob.glob(os.path.join(sys.argv[1], "suite", "manifest*.jsonl"))):
    for line in open(path, encoding="utf-8"):
        names[json.loads(line)["model"]] = None
print(",".join(names))
EOF
)
choice=(--models "$models")
[ -z "$models" ] && choice=(--per-repo "$PER_REPO")
started=$(date +%s.%N)
TRITON_CACHE_DIR=$WORK/cache_new/triton TORCHINDUCTOR_CACHE_DIR=$WORK/cache_new/inductor \
    TORCHINDUCTOR_COMPILE_THREADS=$COMPILE_THREADS \
    run_capped "$NEW_CAP" "$OUT/new.log" python3 run_inductor_suite.py --suite modules --repos "$REPOS" \
    "${choice[@]}" "${WALL[@]}" -o "$WORK/new" --workers-per-gpu "$WORKERS" --timeout "$TIMEOUT" \
    --time-budget "$NEW_BUDGET" ${EXTRA:-} -q
echo "new: exit status $? after $(python3 -c "import time; print(round(time.time() - $started))") s"
echo "$started $(date +%s.%N)" >"$WORK/new_times"

# 3. Kernels of both runs.
for run in old new; do
    timeout 30 python3 get_kernels_from_debug_info.py "$WORK/$run" -o "$WORK/kernels_$run" -q >"$WORK/extract_$run.log" 2>&1
done

# 4. Summary (plain json over the manifests: no project code).
python3 - "$WORK" "${models:+$(echo "$models" | tr ',' '\n' | wc -l)}" <<'EOF' | tee "$OUT/summary.txt"
"""Counts of both runs from their manifests, stats and extracted kernels."""
import collections, datetime, glob, json, os, re, sys

work, requested = sys.argv[1], sys.argv[2]


def load(run):
    latest = {}
    for path in sorted(glob.glob(os.path.join(work, run, "suite", "manifest*.jsonl"))):
        for line in open(path, encoding="utf-8"):
            entry = json.loads(line)
            latest[entry["model"]] = entry
    stats_path = os.path.join(work, run, "suite", "stats.json")
    stats = json.load(open(stats_path))["counts"] if os.path.exists(stats_path) else {}
    kernels_path = os.path.join(work, f"kernels_{run}", "kernels.jsonl")
    ids = [json.loads(l)["id"] for l in open(kernels_path, encoding="utf-8")] if os.path.exists(kernels_path) else []
    start, end = map(float, open(os.path.join(work, f"{run}_times")).read().split())
    return latest, stats, ids, start, end


def kind(error):
    """An error's kind: its message with numbers, quoted names and paths folded."""
    return re.sub(r"\d+", "N", re.sub(r"'[^']*'", "'…'", (error or "").splitlines()[0] if error else ""))[:110]


def report(run, latest, stats, ids, start, end):
    status = collections.Counter(e["status"] for e in latest.values())
    skipped = collections.Counter(e.get("skip_reason", "").split(" ")[1] if e.get("skip_reason") else "other"
                                  for e in latest.values() if e["status"] == "skipped")
    candidates = len(latest) + stats.get("not_started", 0)
    attempted = sum(status[s] for s in ("ok", "failed", "timeout", "crashed"))
    runnable = candidates - status["skipped"]
    wall = end - start
    starts = [datetime.datetime.fromisoformat(e["started_at"]).timestamp() for e in latest.values()
              if e.get("started_at") and e["status"] != "skipped"]
    listing = max(0.0, min(starts) - start) if starts else float("nan")
    phases = collections.Counter((e.get("phase") or e["status"]) for e in latest.values()
                                 if e["status"] in ("failed", "timeout", "crashed"))
    kernels = sum(int(e.get("kernels") or 0) for e in latest.values())
    rate = attempted / (wall / 60) if wall else 0.0
    pool_rate = attempted / ((wall - listing) / 60) if starts and wall > listing else 0.0
    print(f"{run}: candidates {candidates} (not started {stats.get('not_started', 0)}), skipped {status['skipped']} "
          f"({', '.join(f'missing {k} {v}' for k, v in skipped.items()) or 'none'}), attempted {attempted}, "
          f"compiled {status['ok']} = {status['ok'] / max(1, runnable):.0%} of the {runnable} not skipped")
    print(f"  failures by phase: {dict(phases.most_common()) or 'none'}")
    for (phase, text), count in collections.Counter(
            (e.get("phase") or e["status"], kind(e.get("error"))) for e in latest.values()
            if e["status"] in ("failed", "timeout", "crashed")).most_common(6):
        print(f"    {count} x {phase}: {text}")
    print(f"  kernels {kernels} (extracted {len(ids)}, distinct {len(set(ids))}); wall {wall:.0f} s, listing "
          f"{listing:.0f} s; {rate:.1f} modules per GPU-minute ({pool_rate:.1f} after the listing)")
    return {"compiled": status["ok"], "share": status["ok"] / runnable if runnable else 0.0, "rate": rate,
            "pool_rate": pool_rate, "distinct": len(set(ids))}


print(f"modules requested from the old run's choice: {requested or 'none (new used its own --per-repo)'}")
old = report("old", *load("old"))
new = report("new", *load("new"))
print(f"ratio new/old: modules per GPU-minute {new['rate'] / old['rate'] if old['rate'] else float('nan'):.2f} "
      f"({new['pool_rate'] / old['pool_rate'] if old['pool_rate'] else float('nan'):.2f} after the listing), "
      f"compiled share {new['share']:.0%} vs {old['share']:.0%}, distinct kernels {new['distinct']} vs "
      f"{old['distinct']}")
EOF

cat "$WORK"/old/suite/manifest*.jsonl >"$OUT/old_manifest.jsonl" 2>/dev/null
cat "$WORK"/new/suite/manifest*.jsonl >"$OUT/new_manifest.jsonl" 2>/dev/null
(cd "$WORK" && tar czf "$OUT/kernels.tar.gz" kernels_old/kernels.jsonl kernels_new/kernels.jsonl 2>/dev/null)
ls -l "$OUT" | tail -n +2 | awk '{print "  " $5 "  " $9}'
