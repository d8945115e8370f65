#!/usr/bin/env bash
# --suite modules on a GPU behind the wall (persistent walled workers, the default) over downloaded repositories
# (issue #24): compiled share of the candidates not skipped, failures by phase, walled modules per GPU-minute.
#   REPOS=.ordinary WORKERS=8 BUDGET=200 TIMEOUT=90 bash benchmarks/gpu_walled_modules.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_walled_out}; mkdir -p "$OUT"
WORK=${WORK:-/tmp/walled_modules}; rm -rf "$WORK"
export TORCHINDUCTOR_COMPILE_THREADS=${COMPILE_THREADS:-1} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
started=$(date +%s)
python3 run_inductor_suite.py --suite modules --repos "${REPOS:-.ordinary}" --out "$WORK" -q \
    --workers-per-gpu "${WORKERS:-8}" --time-budget "${BUDGET:-200}" --timeout "${TIMEOUT:-90}" >"$OUT/suite.log" 2>&1
wall=$(( $(date +%s) - started ))
python3 - "$WORK" "$wall" <<'PY' | tee "$OUT/summary.txt"
import collections, json, sys
from pathlib import Path
work, wall = Path(sys.argv[1]), int(sys.argv[2])
rows = {}
for line in (work / "suite" / "manifest.jsonl").read_text().splitlines():
    row = json.loads(line)
    rows[row["model"]] = row
status = collections.Counter(r["status"] for r in rows.values())
skipped = status.get("skipped", 0)
attempted = len(rows) - skipped
ok = status.get("ok", 0)
phases = collections.Counter(r.get("phase") for r in rows.values() if r["status"] not in ("ok", "skipped"))
walled = sum(1 for r in rows.values() if r.get("sandbox_pid"))
print(f"{len(rows)} candidates, {skipped} skipped, {attempted} attempted, {ok} compiled "
      f"({ok / max(1, attempted):.1%} of those not skipped), {walled} ran behind the wall")
print("statuses:", dict(status), "failures by phase:", dict(phases))
print(f"wall {wall} s: {attempted / (wall / 60):.1f} walled modules per GPU-minute, "
      f"kernels {sum(r.get('kernels') or 0 for r in rows.values())}")
errors = collections.Counter((r.get("error") or "")[:90] for r in rows.values() if r["status"] not in ("ok", "skipped"))
for error, count in errors.most_common(12):
    print(f"  {count:>3} x {error}")
PY
cp "$WORK/suite/manifest.jsonl" "$OUT/" 2>/dev/null
exit 0
