#!/usr/bin/env bash
# The whole pipeline on bundled inputs: no GitHub token, no GPU, no network.
#
#   1. Inductor kernels out of real TORCH_COMPILE_DEBUG=1 folders (tests/fixtures/torch_compile_debug/*.tar.gz,
#      unpacked into .cache/demo/torch_compile_debug)    -> inductor_kernels/
#   2. the bundled repositories of examples/repos/ ingested through the scraper's offline path (--local),
#      then the generator cuts out every kernel            -> scraper/generator/{paritybench_download,generated}/
#   3. both merged into torchtune text-completion rows    -> datasets/triton_functions.json
#
# Same commands as the README's pipeline; docs/demo.md says how to run them against live GitHub.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bash demo.sh [--root DIR] [--clean] [--validate [LEVEL]] [-h|--help]

Runs the three stages of the pipeline on bundled inputs and prints the stats of each stage and the
torchtune snippet for the dataset it writes (datasets/triton_functions.json).

  --root DIR   checkout of this repository to run in; every output lands under it
               (default: $DEMO_ROOT, else the folder holding demo.sh)
  --clean      first empty the output folders (inductor_kernels/, datasets/, scraper/generator/generated/,
               scraper/generator/paritybench_download/, .cache/demo/), keeping their README files.
               Without it, a rerun is idempotent, but outputs of your own earlier runs take part.
  --validate [LEVEL]
               also verify every kernel in a sandbox (create_json.py --validate LEVEL): parses, imports
               (runs each module with TRITON_INTERPRET=1) or compiles (triton.compile for kernels with a
               known signature; the default LEVEL). Results land on the records of datasets/kernels.jsonl.
  -h, --help   this text

Environment: PYTHON (interpreter to use, default python3), DEMO_ROOT (as --root).
EOF
}

ROOT="${DEMO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
CLEAN=0
VALIDATE=()
while [ $# -gt 0 ]; do
    case "$1" in
        --root) [ $# -ge 2 ] || { echo "demo.sh: --root needs a folder" >&2; exit 2; }; ROOT="$2"; shift 2 ;;
        --root=*) ROOT="${1#--root=}"; shift ;;
        --clean) CLEAN=1; shift ;;
        --validate)
            case "${2:-}" in
                parses|imports|compiles) VALIDATE=(--validate "$2"); shift 2 ;;
                *) VALIDATE=(--validate compiles); shift ;;
            esac ;;
        --validate=*) VALIDATE=(--validate "${1#--validate=}"); shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "demo.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

die() { echo "demo.sh: $*" >&2; exit 1; }
CURRENT_STEP="setup"
step() { CURRENT_STEP="$*"; printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
trap 'status=$?; echo "demo.sh: stopped: \"$CURRENT_STEP\" failed (exit $status)" >&2; exit $status' ERR

[ -d "$ROOT" ] || die "--root $ROOT is not a folder"
ROOT="$(cd "$ROOT" && pwd)"
for script in get_kernels_from_debug_info.py scrape_github.py scraper/generator/main.py create_json.py; do
    [ -f "$ROOT/$script" ] || die "$ROOT/$script is missing: --root must be a checkout of triton-data"
done
# An absolute interpreter path, so that it still works after `cd scraper/generator` (e.g. PYTHON=.venv/bin/python).
PYTHON="$("${PYTHON:-python3}" -c 'import sys; print(sys.executable)')" || die "cannot run PYTHON=${PYTHON:-python3}"
cd "$ROOT"

OUTPUTS=(inductor_kernels datasets scraper/generator/generated scraper/generator/paritybench_download)
DEMO_WORK=.cache/demo
TCD="$DEMO_WORK/torch_compile_debug"
# PATH=OWNER/NAME: each bundled folder is ingested under its owner/name (else it would be local/<folder name>).
LOCAL_ARGS=()
for repo in examples/repos/*/*; do
    if [ -d "$repo" ]; then LOCAL_ARGS+=("$repo=${repo#examples/repos/}"); fi
done
FIXTURES=(tests/fixtures/torch_compile_debug/*.tar.gz)
[ "${#LOCAL_ARGS[@]}" -gt 0 ] || die "no bundled repositories under $ROOT/examples/repos/<owner>/<name>"
[ -f "${FIXTURES[0]}" ] || die "no torch_compile_debug archives under $ROOT/tests/fixtures/torch_compile_debug"

if [ "$CLEAN" = 1 ]; then
    step "Emptying the output folders (--clean)"
    for dir in "${OUTPUTS[@]}"; do
        if [ -d "$dir" ]; then
            find "$dir" -mindepth 1 -maxdepth 1 ! -name README.md ! -name .gitkeep -exec rm -rf {} +
        fi
    done
    rm -rf "$DEMO_WORK"
else
    # Archives other than the bundled repositories' own come from an earlier real scrape.
    earlier=0
    for archive in scraper/generator/paritybench_download/*.zip; do
        [ -f "$archive" ] || continue
        name="$(basename "$archive" .zip)"
        [ -d "examples/repos/${name/__//}" ] || earlier=$((earlier + 1))
    done
    if [ "$earlier" -gt 0 ]; then
        echo "demo.sh: note: scraper/generator/paritybench_download already holds $earlier archives of an" \
             "earlier run; they take part in this one (use --clean to start empty)" >&2
    fi
fi

step "0/3  Unpacking ${#FIXTURES[@]} real torch_compile_debug archives into $TCD"
rm -rf "$TCD"
"$PYTHON" - "$DEMO_WORK" "${FIXTURES[@]}" <<'EOF'
import sys, tarfile
from pathlib import PurePosixPath


def check_members(tar):
    """For a Python without tarfile's extraction filters (PEP 706): refuse what the "data" filter refuses."""
    for member in tar.getmembers():
        parts = PurePosixPath(member.name).parts
        if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
            sys.exit(f"demo.sh: refusing {tar.name}: unsafe member {member.name!r}")


# Every archive holds torch_compile_debug/run_<time>-pid_<pid>/...; the run folders differ, so they merge.
for archive in sys.argv[2:]:
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(sys.argv[1], filter="data")  # no absolute paths, no `..`, no links out, no devices
        else:
            check_members(tar)
            tar.extractall(sys.argv[1])
EOF

step "1/3  Inductor: python get_kernels_from_debug_info.py $TCD"
"$PYTHON" get_kernels_from_debug_info.py "$TCD"

step "2/3  GitHub, offline: python scrape_github.py --local ${LOCAL_ARGS[*]}"
"$PYTHON" scrape_github.py --local "${LOCAL_ARGS[@]}"

step "2/3  Generator: cd scraper/generator && python main.py --generate-all"
(cd scraper/generator && "$PYTHON" main.py --generate-all)

step "3/3  Dataset: python create_json.py inductor_kernels scraper/generator/generated ${VALIDATE[*]+"${VALIDATE[*]}"}"
"$PYTHON" create_json.py inductor_kernels scraper/generator/generated ${VALIDATE[@]+"${VALIDATE[@]}"}

step "Summary"
"$PYTHON" - "$ROOT" <<'EOF'
import json, sys
from pathlib import Path

root = Path(sys.argv[1])
stages = [
    ("1 inductor", "inductor_kernels/stats.json"),
    ("2a scraper", "scraper/generator/paritybench_download/stats.json"),
    ("2b generator", "scraper/generator/generated/stats.json"),
    ("3 dataset", "datasets/stats.json"),
]
for label, rel in stages:
    path = root / rel
    if not path.is_file():
        print(f"{label:<13} {rel}: (no stats.json)")
        continue
    counts = json.loads(path.read_text()).get("counts", {})
    shown = ", ".join(f"{k}={v}" for k, v in counts.items() if isinstance(v, (int, float)))
    print(f"{label:<13} {rel}: {shown}")

print()
for data in sorted((root / "datasets").glob("triton_functions*.json")):
    text = data.read_text()
    count = f"{len(json.loads(text))} rows" if text.lstrip().startswith("[") else "not a JSON array"
    print(f"Dataset: {data} ({count})")

# The training split file when create_json.py wrote one (as its own snippet names), else the whole set.
train = root / "datasets" / "triton_functions.train.json"
data = train if train.is_file() else root / "datasets" / "triton_functions.json"
print(f"""
torchtune config (text-completion):
  dataset:
    _component_: torchtune.datasets.text_completion_dataset
    source: json
    data_files: {data}
    column: text
    split: train

Plain Hugging Face datasets:
  datasets.load_dataset("json", data_files="{data}", split="train")""")
EOF
