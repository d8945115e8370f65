"""One corpus built by the real stages on the fixtures, for every test that needs a whole corpus (the report's,
and the one that compares a corpus with the outputs recorded before a change: tests/test_same_outputs.py).

`build_corpus` fills scraper/corpus.py's layout by running each stage for real, in this process, as `triton-data
build` would: the suite debug roots of a real H200 run (timm, huggingface, with accuracy and pairing records) and a
part of a real --suite modules run (no stats.json: it was cut down), stage 1 over them and plain debug folders
(by default a training run and a user kernel), the pair check's results as that H200 run recorded them
(pairs_h200_checked: pair_correct, speedup) with the summary the check writes, the bundled repositories plus one
hostile repository through the scraper's offline path and the generator (with --validate parses), and
create_json.py's three tasks."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import tarfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "tests" / "fixtures"
SUITE_RUN = FIXTURES / "suite_run"
TCD = FIXTURES / "torch_compile_debug"
# What a scraped kernel may hold: markup that would end the page's <pre>, run a script, load an image, and a
# right-to-left override that would reorder the text around it.
HOSTILE = ('</pre></td></tr></table><script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'
           "<style>body { display: none }</style>")
BIDI = "\u202e"
EVIL_KERNEL = f'''import triton
import triton.language as tl


@triton.jit
def evil_kernel(x_ptr, n):
    """{HOSTILE} {BIDI}gnp.exe"""
    pid = tl.program_id(0)
    tl.store(x_ptr + pid, tl.load(x_ptr + pid) * 2)
'''


def unpack(archive: Path, dest: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest


PLAIN_DEFAULT = ("tcd_training", "tcd_userkernel")
PLAIN_ALL = ("tcd_autotune", "tcd_huggingface", "tcd_timm", "tcd_training", "tcd_userkernel")  # the demo's


def build_corpus(root: Path, plain: tuple = PLAIN_DEFAULT) -> Path:
    """A corpus with every stage run on the fixtures (see the module's docstring), with the plain debug folders
    `plain` (names of tests/fixtures/torch_compile_debug/*.tar.gz); returns its folder."""
    corpus = root / "corpus"
    suites = corpus / "suites"
    unpacked = unpack(SUITE_RUN / "pairs_h200.tar.gz", root / "h200")
    suites.mkdir(parents=True)
    shutil.move(unpacked / "tcd_timm", suites / "timm")
    shutil.move(unpacked / "tcd_hf", suites / "huggingface")
    shutil.move(unpack(SUITE_RUN / "suite_modules.tar.gz", root / "modules") / "suite_modules", suites / "modules")
    plain = [unpack(TCD / f"{name}.tar.gz", root / name) / "torch_compile_debug"
             for name in plain]
    run_main("get_kernels_from_debug_info", [*sorted(suites.iterdir()), *plain, "-o", corpus / "kernels"])
    record_gpu_check(corpus / "kernels")
    github_and_generator(root, corpus)
    datasets(corpus)
    return corpus


def run_main(module: str, argv: list) -> None:
    import importlib

    done = importlib.import_module(module).main([*map(str, argv), "-q"])
    assert done == 0, f"{module} {argv}: exit {done}"


def record_gpu_check(kernels: Path) -> None:
    """The H200's verdicts (pair_correct, speedup, check) on the model-level pairs of the same models, and the
    pair check's summary of them, written as `triton-data pairs check` writes both."""
    from scraper.pairs.check import CHECK_SUMMARY, summarize
    from scraper.pairs.record import read_pairs
    from scraper.fileio import atomic_write_json, write_jsonl

    checked = {p["model"]: p for p in map(json.loads, gzip.open(SUITE_RUN / "pairs_h200_checked.jsonl.gz", "rt"))}
    pairs = read_pairs(kernels / "pairs.jsonl")
    judged = [p for p in pairs if p.pair_level == "model" and p.model in checked]
    for pair in judged:
        gpu = checked[pair.model]
        pair.pair_correct, pair.speedup, pair.check = gpu["pair_correct"], gpu["speedup"], gpu["check"]
    write_jsonl(kernels / "pairs.jsonl", pairs)
    atomic_write_json(kernels / CHECK_SUMMARY, summarize(judged, 0.0))


def github_and_generator(root: Path, corpus: Path) -> None:
    evil = root / "repos" / "evil-kernels"
    evil.mkdir(parents=True)
    (evil / "evil.py").write_text(EVIL_KERNEL, encoding="utf-8")
    local = [f"{repo}={repo.relative_to(REPO_ROOT / 'examples' / 'repos').as_posix()}"
             for repo in sorted((REPO_ROOT / "examples" / "repos").glob("*/*")) if repo.is_dir()]
    run_main("scrape_github", ["--local", *local, f"{evil}=mallory/evil-kernels", "-o", corpus / "github"])
    from scraper.generator import main as generator

    assert generator.main(["--generate-all", "--download-dir", str(corpus / "github"), "-o", str(corpus / "generated"),
                           "--jobs", "1", "--validate", "parses", "-q"]) == 0


def datasets(corpus: Path) -> None:
    out = corpus / "datasets"
    inputs = [corpus / "kernels", corpus / "generated"]
    run_main("create_json", [*inputs, "-o", out / "triton_functions.json"])
    run_main("create_json", [corpus / "kernels", "--task", "pairs", "--include-unchecked", "--pair-level",
                             "kernel,module,model,graph", "-o", out / "triton_pairs.json"])
    run_main("create_json", [corpus / "kernels", "--task", "problems", "-o", out / "triton_problems.json"])


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------ its digest

# What differs between two builds of the same inputs and is no output of the code: timings and the time of day,
# and the build's own folder (every path below it is written relative to "<root>").
# (graphs_done.jsonl's fingerprint is a hash over the input's path, so it differs per folder too.)
VOLATILE_KEYS = frozenset({"seconds", "elapsed_s", "wall_s", "started", "finished", "created", "time", "mtime",
                           "mtime_ns", "timestamp", "fetched_at", "scraped_at", "downloaded_at", "duration_s",
                           "fingerprint"})


def corpus_digest(corpus: Path, root: Path) -> dict:
    """{relative path: {"rows": n, "sha256": ...}} of every file a build left in `corpus`, as text with `root`
    written as "<root>" (byte for byte where nothing in it varies); a JSON or JSON Lines file that holds volatile
    keys as its values without them (keys sorted), a file that is not UTF-8 as its bytes."""
    digest = {}
    for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
        name = path.relative_to(corpus).as_posix()
        rows, text = normalized(path, str(root))
        digest[name] = {"rows": rows, "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
    return digest


def normalized(path: Path, root: str) -> tuple[int, str]:
    """(rows, text): the file with what varies between runs taken out (see corpus_digest)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return 1, hashlib.sha256(data).hexdigest()
    text = text.replace(root, "<root>")
    if path.suffix == ".jsonl":
        values = [json.loads(line) for line in text.splitlines() if line.strip()]
        if all(stable(value) == value for value in values):  # nothing varies: the text itself, byte for byte
            return len(values), text
        return len(values), "\n".join(json.dumps(stable(value), sort_keys=True) for value in values)
    if path.suffix == ".json":
        value = json.loads(text)
        count = len(value) if isinstance(value, list) else 1
        return count, text if stable(value) == value else json.dumps(stable(value), sort_keys=True)
    return text.count("\n"), text


def stable(value):
    """`value` without its VOLATILE_KEYS, at any depth."""
    if isinstance(value, dict):
        return {key: stable(item) for key, item in value.items() if key not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [stable(item) for item in value]
    return value


def main(argv=None) -> int:
    """python tests/corpus_helpers.py OUT.json: build the corpus (every plain fixture) in a temporary folder and
    write its digest; how tests/fixtures/same_outputs.json was made (see tests/test_same_outputs.py)."""
    import argparse
    import sys
    import tempfile

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT))
    with tempfile.TemporaryDirectory(prefix="same-outputs-") as folder:
        root = Path(folder)
        digest = corpus_digest(build_corpus(root, PLAIN_ALL), root)
    args.out.write_text(json.dumps(digest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{len(digest)} files -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
