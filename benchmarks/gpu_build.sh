#!/usr/bin/env bash
# `triton-data build` on a fresh GPU machine (issue #25): the timm and Hugging Face suites, extraction with pairs and
# problems, the GPU pair check, the three datasets and the report, planned with --hours, then the figures per
# GPU-minute. From the repository root of the GPU machine:
#
#   HOURS=0.1 bash benchmarks/gpu_build.sh
#
# Settings (environment): OUT=gpu_build_out (result files), CORPUS=/tmp/corpus, HOURS=0.1, WORKERS=6 (suite workers
# on the one GPU: compiling is CPU work), COMPILE_THREADS=2, EXTRA="..." (more build options).
# Result files in $OUT: summary.txt (what is printed), build.json, report.html, report.json, datasets.tar.gz (the
# three datasets), logs.tar.gz (each stage's log and stats).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_build_out}
CORPUS=${CORPUS:-/tmp/corpus}
HOURS=${HOURS:-0.1}
export TORCHINDUCTOR_COMPILE_THREADS=${COMPILE_THREADS:-2} PYTHONUNBUFFERED=1
OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/summary.txt"
started=$(date +%s)
python3 -m scraper.console build -o "$CORPUS" --hours "$HOURS" --suites timm,huggingface \
    --workers-per-gpu "${WORKERS:-6}" ${EXTRA:-} 2>&1 | tee -a "$OUT/summary.txt"
status=${PIPESTATUS[0]}
wall=$(( $(date +%s) - started ))
python3 - "$CORPUS" "$wall" "$status" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
from pathlib import Path
corpus, wall, status = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
minutes = wall / 60
rows = {}
for task, name in (("completion", "triton_functions.json"), ("pairs", "triton_pairs.json"),
                   ("problems", "triton_problems.json")):
    try:
        rows[task] = len(json.loads((corpus / "datasets" / name).read_text()))
    except (OSError, ValueError):
        rows[task] = None
check = {}
try:
    check = json.loads((corpus / "kernels" / "pairs_check.json").read_text())
except (OSError, ValueError):
    pass
print(f"build exit {status}, {wall} s wall on one GPU")
for task, count in rows.items():
    per = f"{count / minutes:.1f} per GPU-minute" if count else "-"
    print(f"  {task:<10} {count} rows  ({per})")
print("  pair check:", json.dumps({k: check.get(k) for k in ("checked", "passed", "failed", "unchecked", "pass_rate")
                                   if k in check}) if check else "none")
PY
cp "$CORPUS"/build.json "$CORPUS"/report.html "$CORPUS"/report.json "$OUT/" 2>/dev/null
tar -czf "$OUT/datasets.tar.gz" -C "$CORPUS" datasets 2>/dev/null
tar -czf "$OUT/logs.tar.gz" -C "$CORPUS" logs kernels/stats.json kernels/pairs_check.json 2>/dev/null
exit 0
