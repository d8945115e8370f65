"""What `triton-data build -o CORPUS` leaves: one folder per stage, each exactly what that stage's own command
writes when run by hand with that folder as its output, so every stage's files keep their usual names and readers.

    CORPUS/
      build.json               the build's plan and each stage's state (scraper/builder/)
      github/                  scrape_github.py --download-dir: archives + manifest.jsonl (a token or --repos)
      generated/               the generator's -o: modules, kernels.jsonl, stats.json
      suites/<suite>/          run_inductor_suite.py -o, one debug root per suite (suite/manifest.jsonl, stats)
      kernels/                 get_kernels_from_debug_info.py -o: kernels.jsonl, pairs.jsonl, problems/,
                               pairs_rejects.jsonl, stats.json; the pair check's pairs_check.json beside them
      datasets/                create_json.py's three tasks: triton_functions.json (completion),
                               triton_pairs.json (checked pairs), triton_problems.json (problems), their cards
      report.html, report.json triton-data report CORPUS
"""

from __future__ import annotations

from pathlib import Path

BUILD = "build.json"
GITHUB = "github"
GENERATED = "generated"
SUITES = "suites"
KERNELS = "kernels"
DATASETS = "datasets"
REPORT_HTML = "report.html"
REPORT_JSON = "report.json"

# create_json.py --task -> the file it writes under DATASETS
DATASET_FILES = {
    "completion": "triton_functions.json",
    "pairs": "triton_pairs.json",
    "problems": "triton_problems.json",
}


def suite_root(corpus: Path, suite: str) -> Path:
    """The debug root of one suite's run in a corpus."""
    return Path(corpus) / SUITES / suite
