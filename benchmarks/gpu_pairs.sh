#!/usr/bin/env bash
# Pairs on a GPU machine (issues #11, #22): the timm and Hugging Face suites (inference, accuracy checked), their
# kernels, pairs (kernel, graph and model level) and problems, the GPU check of the pairs (kernel-level first, many per
# child), and KernelBench's own evaluator on the pairs that passed, within 9 minutes on one H100/H200 (16 cores).
#
#   bash benchmarks/gpu_pairs.sh          # from the repository root, on the GPU machine
#
# 1. run_inductor_suite.py --suite timm and --suite huggingface at the same time, every model of
#    scraper/suites/models/{timm,huggingface}.txt (those not started within BUDGET seconds are counted, not run);
# 2. get_kernels_from_debug_info.py over both debug roots: kernels.jsonl, pairs.jsonl, problems/;
# 3. python -m scraper.pairs.check on pairs.jsonl (no pair started after the time left allows);
# 4. benchmarks/kernelbench_eval.py on the pairs that passed (KernelBench's eval_kernel_against_ref, unchanged, from
#    KERNELBENCH_SRC), while time is left;
# 5. prints: models ok / failed, accuracy pass / fail / skipped, pairs built by level (built / distinct / passed /
#    failed) and dropped by reason, launch configurations (recorded / heuristics), pairs passing the check (goal
#    >= 95%), passing pairs per GPU-minute of the whole run (goal >= 100), the speedup distribution, and the share of
#    our passing pairs that KernelBench's evaluator passes too (goal >= 90%).
#
# Settings (environment):
#   OUT=gpu_pairs_out        where the result files go (6 files, each < 16 MB, below)
#   WORKERS=12               worker processes in all, half per suite (compiling is CPU work: 16 cores)
#   COMPILE_THREADS=2        Inductor's compile processes per worker
#   TIMEOUT=180 BUDGET=100   seconds per model / no model started after BUDGET (compile ends by BUDGET + TIMEOUT)
#   TOTAL=530                seconds the whole script may take; the check starts no pair it cannot finish by then
#   CHECK_JOBS=8 CHECK_TIMEOUT=180 RUNS=10  the check: children at once, seconds per pair (4-layer LLMs took up to
#                                          147 s on the H200 with 5 at once), timed runs per side
#   TIMM_MODELS=... HF_MODELS=...            comma-separated models instead of the list files
#   WORK=/tmp/pairs_gpu      scratch: the debug roots, the extracted kernels and pairs
#   SKIP_SUITE=1             reuse the debug roots already in $WORK (tcd_timm, tcd_hf)
#   CHECK_DEVICE=cpu         the check's dry run (TRITON_INTERPRET=1), to try the script on a CPU machine
#   EXTRA="..."              more run_inductor_suite.py options
#   KERNELBENCH_SRC=.kb/src  KernelBench's src/ folder (a checkout of ScalingIntelligence/KernelBench); none: skipped
#   KB_JOBS=8 KB_SHARE=60    KernelBench's evaluator: children at once, seconds it may take of the total
#
# Result files in $OUT: summary.txt (what is printed), summary.json (the same figures), pairs.jsonl.gz (every pair
# with its check), manifest.jsonl (both suites' manifest lines), logs.tar.gz (the commands' logs, stats.json,
# pairs_rejects.jsonl, pairs_check.json), fixture_pairs.tar.gz (three small timm and three Hugging Face models'
# debug folders: suite/ files and each graph's output_code.py + fx_graph_readable.py: a test fixture).
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-gpu_pairs_out}
WORK=${WORK:-/tmp/pairs_gpu}
WORKERS=${WORKERS:-12}
TIMEOUT=${TIMEOUT:-180}
BUDGET=${BUDGET:-100}
TOTAL=${TOTAL:-530}
CHECK_JOBS=${CHECK_JOBS:-8}
CHECK_TIMEOUT=${CHECK_TIMEOUT:-180}
RUNS=${RUNS:-10}
export TORCHINDUCTOR_COMPILE_THREADS=${COMPILE_THREADS:-2} PYTHONUNBUFFERED=1
OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)
started=$(date +%s)
elapsed() { echo $(( $(date +%s) - started )); }

if [ -z "${SKIP_SUITE:-}" ]; then
    rm -rf "$WORK" && mkdir -p "$WORK"
    half=$(( (WORKERS + 1) / 2 ))
    timm=() hf=()
    [ -n "${TIMM_MODELS:-}" ] && timm=(--models "$TIMM_MODELS")
    [ -n "${HF_MODELS:-}" ] && hf=(--models "$HF_MODELS")
    python3 run_inductor_suite.py --suite timm "${timm[@]}" --mode inference -o "$WORK/tcd_timm" \
        --workers-per-gpu "$half" --timeout "$TIMEOUT" --time-budget "$BUDGET" ${EXTRA:-} -q \
        >"$WORK/suite_timm.log" 2>&1 &
    python3 run_inductor_suite.py --suite huggingface "${hf[@]}" --mode inference -o "$WORK/tcd_hf" \
        --workers-per-gpu "$half" --timeout "$TIMEOUT" --time-budget "$BUDGET" ${EXTRA:-} -q \
        >"$WORK/suite_hf.log" 2>&1 &
    wait
fi
suite_s=$(elapsed)
echo "suites done after ${suite_s} s"
rm -rf "$WORK/kernels"
python3 get_kernels_from_debug_info.py "$WORK/tcd_timm" "$WORK/tcd_hf" -o "$WORK/kernels" -q >"$WORK/extract.log" 2>&1
status=$?
extract_s=$(elapsed)
echo "extraction exit status $status after ${extract_s} s"
KB_SHARE=${KB_SHARE:-60}
[ -z "${KERNELBENCH_SRC:-}" ] && [ -d .kb/src/kernelbench ] && KERNELBENCH_SRC=.kb/src
[ -z "${KERNELBENCH_SRC:-}" ] && KB_SHARE=0
check_budget=$(( TOTAL - extract_s - CHECK_TIMEOUT - KB_SHARE - 20 ))
[ "$check_budget" -lt 0 ] && check_budget=0
python3 -m scraper.pairs.check "$WORK/kernels/pairs.jsonl" --jobs "$CHECK_JOBS" --timeout "$CHECK_TIMEOUT" \
    --runs "$RUNS" --time-budget "$check_budget" --device "${CHECK_DEVICE:-cuda}" >"$WORK/check.log" 2>&1
echo "check exit status $? after $(elapsed) s"  # 1 also when a pair failed: the summary says which
check_s=$(elapsed)
if [ -n "${KERNELBENCH_SRC:-}" ] && [ "${CHECK_DEVICE:-cuda}" = cuda ]; then
    kb_budget=$(( TOTAL - check_s - 30 ))
    [ "$kb_budget" -lt 1 ] && kb_budget=1
    python3 benchmarks/kernelbench_eval.py "$WORK/kernels/pairs.jsonl" --kernelbench-src "$KERNELBENCH_SRC" \
        --only-passed --jobs "${KB_JOBS:-8}" --time-budget "$kb_budget" --out "$OUT/kernelbench.json" \
        >"$WORK/kernelbench.log" 2>&1
    echo "kernelbench eval exit status $? after $(elapsed) s"
fi

python3 - "$WORK" "$OUT" "$suite_s" "$extract_s" "$(elapsed)" <<'EOF' | tee "$OUT/summary.txt"
"""The run's figures from its manifests, stats and pairs (plain json: no project code)."""
import collections, glob, json, os, statistics, sys

work, out = sys.argv[1], sys.argv[2]
suite_s, extract_s, total_s = (int(x) for x in sys.argv[3:6])
summary = {"seconds": {"suites": suite_s, "extraction": extract_s - suite_s, "check": total_s - extract_s,
                       "total": total_s}}


def lines(path):
    return [json.loads(l) for l in open(path, encoding="utf-8") if l.strip()] if os.path.exists(path) else []


for suite, folder in (("timm", "tcd_timm"), ("huggingface", "tcd_hf")):
    latest = {}
    for path in sorted(glob.glob(os.path.join(work, folder, "suite", "manifest*.jsonl"))):
        for entry in lines(path):
            latest[entry["model"]] = entry
    stats = json.load(open(os.path.join(work, folder, "suite", "stats.json")))["counts"] \
        if os.path.exists(os.path.join(work, folder, "suite", "stats.json")) else {}
    status = collections.Counter(e["status"] for e in latest.values())
    accuracy = collections.Counter(str(e.get("accuracy")) for e in latest.values() if e["status"] == "ok")
    skipped = collections.Counter((e.get("accuracy_detail") or {}).get("reason", "")[:80]
                                  for e in latest.values() if e.get("accuracy") == "skipped")
    failed = {m: f"{e.get('phase')}: {(e.get('error') or '')[:100]}" for m, e in latest.items()
              if e["status"] != "ok"}
    inaccurate = {m: (e.get("max_error"), (e.get("accuracy_detail") or {}).get("failures", [])[:1])
                  for m, e in latest.items() if e.get("accuracy") == "fail"}
    summary[suite] = {"listed": stats.get("models_listed"), "not_started": stats.get("not_started"),
                      "status": dict(status), "accuracy": dict(accuracy), "accuracy_skipped": dict(skipped),
                      "failed": failed, "inaccurate": inaccurate}
    print(f"{suite}: listed {stats.get('models_listed')}, not started {stats.get('not_started')}; "
          + ", ".join(f"{k} {v}" for k, v in sorted(status.items()))
          + "; accuracy " + ", ".join(f"{k} {v}" for k, v in sorted(accuracy.items())))
    for model, why in sorted(failed.items()):
        print(f"  {latest[model]['status']} {model}: {why}")
    for model, (error, failures) in sorted(inaccurate.items()):
        print(f"  accuracy fail {model}: max_error {error} {failures}")
    for reason, count in skipped.most_common():
        print(f"  accuracy skipped ({count}): {reason}")

kernels = json.load(open(os.path.join(work, "kernels", "stats.json")))["counts"] \
    if os.path.exists(os.path.join(work, "kernels", "stats.json")) else {}
pairs = lines(os.path.join(work, "kernels", "pairs.jsonl"))
rejects = collections.Counter(r["reason"] for r in lines(os.path.join(work, "kernels", "pairs_rejects.jsonl")))
levels = collections.Counter(p["pair_level"] for p in pairs)
level_reasons = collections.Counter(p["level_reason"] for p in pairs if p["pair_level"] == "graph")
launch = collections.Counter()
for p in pairs:
    launch.update(p.get("launch_configs") or {})
passed = [p for p in pairs if p["pair_correct"] is True]
failed = [p for p in pairs if p["pair_correct"] is False]
unchecked = [p for p in pairs if p["pair_correct"] is None]
phases = collections.Counter((p.get("check") or {}).get("phase") or "not started" for p in failed + unchecked)
speedups = sorted(p["speedup"] for p in passed if p.get("speedup") is not None)
rate = len(passed) / max(1, len(passed) + len(failed))
summary["pairs"] = {"graphs": kernels.get("graphs"), "kernels": kernels.get("kernels"), "built": len(pairs),
                    "levels": dict(levels), "graph_level_because": dict(level_reasons),
                    "dropped": dict(rejects), "launch_configs": dict(launch), "passed": len(passed),
                    "failed": len(failed), "unchecked": len(unchecked), "pass_rate": round(rate, 4),
                    "not_passed_by_phase": dict(phases),
                    "pairs_per_gpu_minute": round(len(passed) / max(total_s / 60, 1e-9), 2)}
print(f"graphs {kernels.get('graphs')}, kernels {kernels.get('kernels')}; pairs built {len(pairs)} "
      f"({', '.join(f'{k} level {v}' for k, v in sorted(levels.items()))}); dropped {sum(rejects.values())}: "
      + (", ".join(f"{k} {v}" for k, v in rejects.most_common()) or "none"))
if level_reasons:
    print("  graph level because: " + ", ".join(f"{k} {v}" for k, v in level_reasons.most_common()))
print("  launch configurations: " + ", ".join(f"{k} {v}" for k, v in launch.most_common()))
print(f"check: passed {len(passed)}, failed {len(failed)}, unchecked {len(unchecked)}; pass rate {rate:.1%} "
      f"(goal >= 95%)")
for phase, count in phases.most_common():
    example = next((p for p in failed + unchecked if ((p.get("check") or {}).get("phase") or "not started") == phase))
    detail = (example.get("check") or {}).get("error") or (example.get("check") or {}).get("failures")
    print(f"  {phase}: {count} (e.g. {example['model']}: {str(detail)[:160]})")
print(f"pairs per GPU-minute: {summary['pairs']['pairs_per_gpu_minute']} ({len(passed)} passing pairs in "
      f"{total_s / 60:.1f} min of the whole run; goal >= 100)")
by_level = {}
for level in ("kernel", "graph", "model"):
    rows = [p for p in pairs if p["pair_level"] == level]
    ids = {p["id"] for p in rows}
    ok = {p["id"] for p in rows if p["pair_correct"] is True}
    bad = {p["id"] for p in rows if p["pair_correct"] is False}
    by_level[level] = {"built": len(rows), "distinct": len(ids), "passed": len(ok), "failed": len(bad),
                       "unchecked": len(ids - ok - bad), "pass_rate": round(len(ok) / max(1, len(ok) + len(bad)), 4),
                       "passing_per_gpu_minute": round(len(ok) / max(total_s / 60, 1e-9), 2)}
summary["levels"] = by_level
print("by level (distinct programs):")
for level, row in by_level.items():
    print(f"  {level:6} built {row['built']}, distinct {row['distinct']}, passed {row['passed']}, failed "
          f"{row['failed']}, unchecked {row['unchecked']}, pass rate {row['pass_rate']:.1%}, passing per GPU-minute "
          f"{row['passing_per_gpu_minute']}")
kernels_total = kernels.get("kernels") or 0
covered = len({k for p in pairs if p["pair_level"] == "kernel" for k in p.get("kernels") or []})
print(f"kernel-level coverage: kernels in a kernel pair {kernels.get('kernel_pairs', 0)} pairs over "
      f"{kernels_total} kernels (distinct kernel names covered {covered})")
kb_path = os.path.join(out, "kernelbench.json")
if os.path.exists(kb_path):
    kb = json.load(open(kb_path))["summary"]
    summary["kernelbench"] = kb
    for level, row in sorted(kb.items()):
        print(f"KernelBench eval_kernel_against_ref ({level}): evaluated {row.get('evaluated', 0)}, compiled "
              f"{row.get('compiled', 0)}, correct {row.get('correct', 0)}; of our passing pairs "
              f"{row.get('passed_both', 0)}/{row.get('passed_our_check', 0)} = {row.get('kernelbench_share_of_our_passed')} "
              f"(goal >= 0.9), not started {row.get('not_started', 0)}")
if speedups:
    q = statistics.quantiles(speedups, n=4) if len(speedups) > 1 else [speedups[0]] * 3
    summary["speedup"] = {"min": speedups[0], "q1": round(q[0], 3), "median": round(q[1], 3), "q3": round(q[2], 3),
                          "max": speedups[-1], "n": len(speedups)}
    print(f"speedup over eager (Triton program / eager model, {len(speedups)} pairs): median {q[1]:.2f}x, "
          f"quartiles {q[0]:.2f}x / {q[2]:.2f}x, range {speedups[0]:.2f}x - {speedups[-1]:.2f}x")
print(f"seconds: suites {suite_s}, extraction {extract_s - suite_s}, check and evaluation {total_s - extract_s}, "
      f"total {total_s}")
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2, sort_keys=True)
EOF

gzip -c "$WORK/kernels/pairs.jsonl" >"$OUT/pairs.jsonl.gz" 2>/dev/null
cat "$WORK"/tcd_timm/suite/manifest*.jsonl "$WORK"/tcd_hf/suite/manifest*.jsonl >"$OUT/manifest.jsonl" 2>/dev/null
(cd "$WORK" && tar czf "$OUT/logs.tar.gz" --ignore-failed-read suite_timm.log suite_hf.log extract.log check.log \
    kernelbench.log kernels/stats.json kernels/pairs_rejects.jsonl kernels/pairs_check.json 2>/dev/null)
# Every graph's output_code.py and fx_graph_readable.py with the suite files: the whole run as a CPU fixture.
(cd "$WORK" && find tcd_timm tcd_hf \( -name output_code.py -o -name fx_graph_readable.py -o -path '*/suite/*' \) \
    -type f ! -name '*.log' | tar czf "$OUT/debug_roots.tar.gz" -T - 2>/dev/null)
python3 - "$WORK" "$OUT/fixture_pairs.tar.gz" <<'EOF'
"""A small test fixture: the three ok models of each suite with the fewest kernels, their suite/ files and their
graph folders' output_code.py and fx_graph_readable.py (plain tarfile: no project code)."""
import glob, io, json, os, sys, tarfile

work, target = sys.argv[1], sys.argv[2]
with tarfile.open(target, "w:gz") as tar:
    for folder in ("tcd_timm", "tcd_hf"):
        root = os.path.join(work, folder)
        entries = [json.loads(l) for p in sorted(glob.glob(os.path.join(root, "suite", "manifest*.jsonl")))
                   for l in open(p, encoding="utf-8") if l.strip()]
        chosen = sorted((e for e in entries if e["status"] == "ok" and e.get("kernels")),
                        key=lambda e: e["kernels"])[:3]
        if os.path.exists(os.path.join(root, "suite", "stats.json")):
            tar.add(os.path.join(root, "suite", "stats.json"), f"{folder}/suite/stats.json")
        manifest = "".join(json.dumps(e) + "\n" for e in chosen).encode("utf-8")
        info = tarfile.TarInfo(f"{folder}/suite/manifest.jsonl")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
        for entry in chosen:
            for key in ("program", "problem", "pairing", "log"):
                if entry.get(key) and os.path.exists(os.path.join(root, entry[key])):
                    tar.add(os.path.join(root, entry[key]), f"{folder}/{entry[key]}")
            for graph in entry.get("graphs") or []:
                for name in ("output_code.py", "fx_graph_readable.py"):
                    path = os.path.join(root, entry["run_dir"], "torchinductor", graph, name)
                    if os.path.exists(path):
                        tar.add(path, f"{folder}/{entry['run_dir']}/torchinductor/{graph}/{name}")
EOF
ls -l "$OUT" | tail -n +2 | awk '{print "  " $5 "  " $9}'
