#!/usr/bin/env bash
# The TorchBench suite on a GPU machine (issue #14), then its kernels: a run that ends within about 5 minutes.
#
#   bash benchmarks/gpu_torchbench.sh          # from the repository root, on the GPU machine
#
# Needs a code-only TorchBench checkout at $TORCHBENCH_DIR (default .gpu/torchbench, git-ignored; make one with
# `python -m scraper.suites.torchbench trim path/to/pytorch-benchmark .gpu/torchbench`, see docs/suite.md).
# Runs scraper/suites/models/torchbench.txt (inference, float32, --random-weights so the torchvision classifiers
# run instead of being skipped as `needs download`), extracts the kernels with get_kernels_from_debug_info.py
# and prints: models listed / ok / skipped by reason / failed, kernels, distinct kernels (and, with BASELINE,
# how many of them the given kernels.jsonl files do not have). Nothing is downloaded.
#
# Settings (environment):
#   OUT=gpu_torchbench_out   where the result files go (6 files, below)
#   WORKERS=10               worker processes on the GPU (compiling is CPU work: 16 cores)
#   COMPILE_THREADS=2        Inductor's compile processes per worker (10 x 2 keeps 16 cores busy, not swamped)
#   TIMEOUT=180 BUDGET=110   seconds per model / no model started after BUDGET: ends within BUDGET + TIMEOUT
#   MODELS=...               comma-separated models instead of the models file ("all": every model of the checkout)
#   BASELINE=a.jsonl:b.jsonl kernels.jsonl files of other suites (timm, huggingface) to count the new kernels against
#   WORK=/tmp/tb_gpu         scratch: the debug root and the extracted kernels
#   EXTRA="..."              more run_inductor_suite.py options (a CPU dry run of this script:
#                            EXTRA="--gpus none --device cpu --backend none" MODELS=dcgan,maml)
#
# Result files in $OUT: summary.txt (what is printed), manifest.jsonl (one line per model), suite.log and
# extract.log (the two commands' output), kernels.jsonl.gz (every kernel record, its PyTorch program attached),
# torchbench_tcd.tar.gz (suite/ and each graph's output_code.py + fx_graph_readable.py, for a local rerun of
# get_kernels_from_debug_info.py).
set -uo pipefail
cd "$(dirname "$0")/.."

TORCHBENCH_DIR=${TORCHBENCH_DIR:-.gpu/torchbench}
OUT=${OUT:-gpu_torchbench_out}
WORK=${WORK:-/tmp/tb_gpu}
WORKERS=${WORKERS:-10}
TIMEOUT=${TIMEOUT:-180}
BUDGET=${BUDGET:-110}
export TORCHINDUCTOR_COMPILE_THREADS=${COMPILE_THREADS:-2} PYTHONUNBUFFERED=1
OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)  # absolute: the tar below runs in $WORK
rm -rf "$WORK" && mkdir -p "$WORK"

models=()
[ -n "${MODELS:-}" ] && models=(--models "$MODELS")
started=$(date +%s)
python3 run_inductor_suite.py --suite torchbench --torchbench-dir "$TORCHBENCH_DIR" "${models[@]}" \
    --random-weights --mode inference -o "$WORK/tcd" --workers-per-gpu "$WORKERS" --timeout "$TIMEOUT" \
    --time-budget "$BUDGET" ${EXTRA:-} -q >"$OUT/suite.log" 2>&1
echo "suite exit status $? after $(( $(date +%s) - started )) s"
python3 get_kernels_from_debug_info.py "$WORK/tcd" -o "$WORK/kernels" -q >"$OUT/extract.log" 2>&1
echo "extraction exit status $? after $(( $(date +%s) - started )) s"

python3 - "$WORK/tcd" "$WORK/kernels" "${BASELINE:-}" <<'EOF' | tee "$OUT/summary.txt"
"""Counts of the run, from its manifest, stats and the extracted kernels (plain json: no project code)."""
import collections, glob, json, os, sys

tcd, kernels_dir, baseline = sys.argv[1], sys.argv[2], sys.argv[3]
latest = {}
for path in sorted(glob.glob(os.path.join(tcd, "suite", "manifest*.jsonl"))):
    for line in open(path, encoding="utf-8"):
        entry = json.loads(line)
        latest[entry["model"]] = entry
stats_path = os.path.join(tcd, "suite", "stats.json")
stats = json.load(open(stats_path))["counts"] if os.path.exists(stats_path) else {}
status = collections.Counter(e["status"] for e in latest.values())
print(f"models listed {stats.get('models_listed', 0)}, run {len(latest)}, not started {stats.get('not_started', 0)}; "
      + ", ".join(f"{k} {v}" for k, v in sorted(status.items())))
reasons = collections.Counter(e.get("skip_reason") for e in latest.values() if e["status"] == "skipped")
for reason, count in reasons.most_common():
    names = sorted(m for m, e in latest.items() if e.get("skip_reason") == reason)
    print(f"  skipped, {reason}: {count} ({', '.join(names)[:200]})")
for model, e in sorted(latest.items()):
    if e["status"] in ("failed", "timeout", "crashed"):
        print(f"  {e['status']} {model}: {e.get('phase')}: {(e.get('error') or '')[:150]}")
ok = sorted(((e.get("kernels") or 0, m) for m, e in latest.items() if e["status"] == "ok"), reverse=True)
print("kernels per ok model: " + ", ".join(f"{m} {k}" for k, m in ok))
kernels_path = os.path.join(kernels_dir, "kernels.jsonl")
records = [json.loads(l) for l in open(kernels_path, encoding="utf-8")] if os.path.exists(kernels_path) else []
ids = {r["id"] for r in records}
kinds = collections.Counter(r.get("kind") for r in records)
attached = sum(1 for r in records if "pytorch" in (r.get("extra") or {}))
print(f"kernels {len(records)} (distinct {len(ids)}; " + ", ".join(f"{k} {v}" for k, v in kinds.most_common())
      + f"); graphs {len({(r['run_dir'], r['graph']) for r in records})}; with their PyTorch program {attached}")
known = set()
for path in filter(None, baseline.split(":")):
    known |= {json.loads(l)["id"] for l in open(path, encoding="utf-8")}
if known:
    print(f"distinct kernels not in BASELINE ({len(known)} distinct there): {len(ids - known)}")
EOF

cat "$WORK"/tcd/suite/manifest*.jsonl >"$OUT/manifest.jsonl" 2>/dev/null
[ -f "$WORK/kernels/kernels.jsonl" ] && gzip -c "$WORK/kernels/kernels.jsonl" >"$OUT/kernels.jsonl.gz"
(cd "$WORK" && find tcd -path '*/torchinductor/*' \( -name output_code.py -o -name fx_graph_readable.py \) \
    >files.txt && echo tcd/suite >>files.txt && tar czf "$OUT/torchbench_tcd.tar.gz" -T files.txt)
if [ "$(stat -c %s "$OUT/torchbench_tcd.tar.gz")" -gt 15000000 ]; then  # the device returns files up to 16 MiB
    (cd "$WORK" && tar czf "$OUT/torchbench_tcd.tar.gz" --exclude='tcd/suite/logs' -T files.txt)
fi
ls -l "$OUT" | tail -n +2 | awk '{print "  " $5 "  " $9}'
