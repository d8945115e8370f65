"""Pairs judged by KernelBench's own evaluator, as people evaluate Triton kernels with it (issue #22).

    python benchmarks/kernelbench_eval.py PAIRS.jsonl --kernelbench-src KernelBench/src [--jobs 8] [--trials 5]
        [--levels kernel,graph,model] [--only-passed] [--limit N] [--time-budget S] [--out results.json]

For each pair (one per distinct id), a child process runs
`kernelbench.eval.eval_kernel_against_ref(python_code, triton_code, backend="triton", num_correct_trials=5)`
unchanged: KernelBench's code (from a checkout of ScalingIntelligence/KernelBench given by --kernelbench-src or
$KERNELBENCH_SRC: its src/ folder), its seeding, its cast of the inputs to fp32, its one-tensor allclose at
atol = rtol = 1e-4. Nothing of KernelBench is part of this repository. Prints, per level: pairs evaluated,
compiled, correct, and among the pairs our own check passed (pair_correct: true), the share KernelBench passes
too (the goal: >= 90%); writes the same as JSON to --out.

On a machine without a GPU KernelBench's eval refuses to run (it asserts CUDA): `--device cpu` runs its loaders and
run_and_check_correctness on the CPU instead (TRITON_INTERPRET=1), as tests/test_kernelbench.py does. Its utils module imports LLM clients (openai, litellm)
and dotenv that the eval never uses: where they are missing, the child registers empty stand-ins for them.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
# On the CPU the child gives libdevice kernels triton.language's same functions, as our own dry run does.
from scraper.pairs.check import LIBDEVICE_IN_TL, libdevice_calls  # noqa: E402

CHILD = r'''
import importlib.util, json, sys, types
sys.path.insert(0, sys.argv[1])
# kernelbench/utils.py imports its LLM clients and dotenv at the top; the eval never calls them. Where they are not
# installed (a GPU box without network), empty stand-ins let the eval module import; its code runs unchanged.
for name, attribute, value in (("openai", "OpenAI", object), ("litellm", "completion", None),
                               ("dotenv", "load_dotenv", lambda *a, **k: None)):
    if importlib.util.find_spec(name) is None:
        module = sys.modules[name] = types.ModuleType(name)
        setattr(module, attribute, value)
from kernelbench import eval as kb
job = json.load(open(sys.argv[2]))
import torch
if job["device"] == "cuda":
    result = kb.eval_kernel_against_ref(job["python_code"], job["triton_code"], seed_num=42,
                                        num_correct_trials=job["trials"], measure_performance=False, verbose=False,
                                        device=torch.device("cuda", 0), backend="triton")
else:  # the CPU run (TRITON_INTERPRET=1): eval_kernel_against_ref's own steps, its functions, no CUDA
    torch.cuda.synchronize = lambda *args, **kwargs: None
    Model, get_init_inputs, get_inputs = kb.load_original_model_and_inputs(job["python_code"], {})
    with torch.no_grad():
        kb.set_seed(42)
        model = Model(*get_init_inputs())
    ModelNew, _ = kb.load_custom_model_with_tempfile(job["triton_code"], entry_point="ModelNew")
    ModelNew.forward.__globals__["empty_strided_cuda"] = (
        lambda size, stride, dtype: torch.empty_strided(size, stride, dtype=dtype))
    if "libdevice" in ModelNew.forward.__globals__:  # the interpreter has none: our dry run's stand-in for it
        sys.path.append(job["repo_root"])
        from scraper.pairs.check import InterpreterLibdevice
        ModelNew.forward.__globals__["libdevice"] = InterpreterLibdevice()
    with torch.no_grad():
        kb.set_seed(42)
        new = ModelNew(*get_init_inputs())
    result = kb.run_and_check_correctness(model, new, get_inputs, {}, job["trials"], seed=42,
                                          device=torch.device("cpu"), backend="triton", precision=torch.float32)
out = {"compiled": None, "correctness": None} if result is None else {
    "compiled": bool(result.compiled), "correctness": bool(result.correctness),
    "metadata": {k: str(v)[:300] for k, v in (result.metadata or {}).items()}}
json.dump(out, open(sys.argv[3], "w"))
'''


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pairs", type=Path)
    parser.add_argument("--kernelbench-src", type=Path, default=os.environ.get("KERNELBENCH_SRC"),
                        help="KernelBench's src/ folder (holding kernelbench/eval.py); default $KERNELBENCH_SRC")
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--trials", type=int, default=5, help="num_correct_trials (KernelBench's default run: 5)")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--levels", default="kernel,graph,model")
    parser.add_argument("--only-passed", action="store_true", help="only pairs our check passed")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--time-budget", type=float, help="start no pair after this many seconds")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: without a GPU, under TRITON_INTERPRET=1, eval_kernel_against_ref's own steps with "
                             "its functions (load_original_model_and_inputs, load_custom_model_with_tempfile, "
                             "run_and_check_correctness), libdevice's rsqrt, exp, erf ... as triton.language's; "
                             "pairs calling another libdevice function or needing CUDA are left out")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.kernelbench_src is None or not (args.kernelbench_src / "kernelbench" / "eval.py").is_file():
        print("error: --kernelbench-src must name KernelBench's src/ folder (kernelbench/eval.py)", file=sys.stderr)
        return 2
    pairs = chosen(args)
    deadline = time.monotonic() + args.time_budget if args.time_budget else None
    with tempfile.TemporaryDirectory(prefix="kernelbench-") as scratch:
        child = Path(scratch) / "child.py"
        child.write_text(CHILD, encoding="utf-8")

        def one(indexed):
            index, pair = indexed
            if deadline is not None and time.monotonic() > deadline:
                return pair, None
            return pair, evaluate(pair, Path(scratch) / f"p{index}", child, args)

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            results = list(pool.map(one, enumerate(pairs)))
    summary = summarize(results)
    print(json.dumps(summary, indent=2, sort_keys=True))
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "pairs": [
            {"id": p["id"], "level": p["pair_level"], "pair_correct": p.get("pair_correct"), "kernelbench": r}
            for p, r in results]}, indent=1), encoding="utf-8")
    return 0


def chosen(args: argparse.Namespace) -> list[dict]:
    """The pairs to evaluate: one per id, of the levels asked for (kernel-level first), passed ones only when
    asked."""
    levels = args.levels.split(",")
    seen, pairs = set(), []
    rows = [json.loads(line) for line in args.pairs.open(encoding="utf-8") if line.strip()]
    rows.sort(key=lambda row: levels.index(row["pair_level"]) if row["pair_level"] in levels else 99)
    for row in rows:
        if row["pair_level"] not in levels or row["id"] in seen:
            continue
        if args.only_passed and row.get("pair_correct") is not True:
            continue
        if args.device == "cpu" and (row.get("needs_cuda")
                                     or not libdevice_calls(row["triton_code"]) <= set(LIBDEVICE_IN_TL)):
            continue  # the reference needs CUDA; a libdevice function the interpreter has no stand-in for
        seen.add(row["id"])
        pairs.append(row)
    return pairs[: args.limit]


def evaluate(pair: dict, folder: Path, child: Path, args: argparse.Namespace) -> dict:
    """KernelBench's verdict on one pair, from a child process (a kernel can take the process down)."""
    folder.mkdir()
    job = folder / "job.json"
    job.write_text(json.dumps({"python_code": pair["python_code"], "triton_code": pair["triton_code"],
                               "trials": args.trials, "device": args.device, "repo_root": str(REPO_ROOT)}),
                   encoding="utf-8")
    result = folder / "result.json"
    try:
        env = {**os.environ, **({"TRITON_INTERPRET": "1"} if args.device == "cpu" else {})}
        done = subprocess.run([sys.executable, str(child), str(args.kernelbench_src), str(job), str(result)],
                              capture_output=True, text=True, timeout=args.timeout, cwd=folder, env=env)
    except subprocess.TimeoutExpired:
        return {"compiled": None, "correctness": False, "error": "timeout"}
    try:
        return json.loads(result.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        tail = (done.stderr or "").strip().splitlines()[-1:] or ["(no output)"]
        return {"compiled": None, "correctness": False, "error": f"exit {done.returncode}: {tail[0][:300]}"}


def summarize(results: list) -> dict:
    """Per level: evaluated, compiled, correct; and of the pairs our check passed, how many KernelBench passes."""
    by_level: dict = collections.defaultdict(collections.Counter)
    for pair, result in results:
        counts = by_level[pair["pair_level"]]
        if result is None:
            counts["not_started"] += 1
            continue
        counts["evaluated"] += 1
        counts["compiled"] += bool(result.get("compiled"))
        counts["correct"] += bool(result.get("correctness"))
        if pair.get("pair_correct") is True:
            counts["passed_our_check"] += 1
            counts["passed_both"] += bool(result.get("correctness"))
    summary = {}
    for level, counts in by_level.items():
        ours = counts["passed_our_check"]
        summary[level] = {**counts, "kernelbench_share_of_our_passed": round(counts["passed_both"] / ours, 4)
                          if ours else None}
    return summary


if __name__ == "__main__":
    sys.exit(main())
