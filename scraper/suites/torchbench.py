"""--suite torchbench: the models of a user's checkout of TorchBench (github.com/pytorch/benchmark).

Models are built through TorchBench's own API, as PyTorch's benchmarks/dynamo/torchbench.py does:
`torchbenchmark.models.<name>.Model(test="eval"|"train", device=..., batch_size=...).get_module()` gives
(model, example_inputs). The program written for each model (scraper.worker.programs.torchbench_program) does that
against the checkout; this module holds what the orchestrator and the worker need around it, without torch:

    find_checkout / list_models   the checkout and the models it has (TorchBench's own listing rule)
    batch_size_for                PyTorch's batch sizes for TorchBench (benchmarks/dynamo/torchbench.yaml)
    skip_reason                   why a model that could not be built is SKIPPED rather than failed: it needs a
                                  download, a missing package, or TorchBench says it is not implemented
    read_left_out                 the left-out models of a models file, with their reasons (for --list)
    trim_checkout                 copy the code of a checkout without its data and large files

Nothing is downloaded at run time: the program refuses network access while the model is built, and the
models that then need weights, data sets or packages that are not installed are recorded as skipped.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Iterable, Optional

from scraper.repos import git_head
from scraper.suites.base import Suite

log = logging.getLogger(__name__)

SUITE = Suite("torchbench", default_batch=None, library="pytorch/benchmark", license=None,
              packages=("torchvision", "transformers", "timm"), packages_required=False)
CHECKOUT_ENV = "TORCHBENCH_DIR"

# From PyTorch's benchmarks/dynamo/torchbench.yaml (`batch_size`, `dont_change_batch_size`): the batch sizes its
# runner passes; every other model gets None, i.e. its own DEFAULT_EVAL_BSIZE / DEFAULT_TRAIN_BSIZE.
PYTORCH_BATCH_SIZES = {
    "training": {"demucs": 4, "dlrm": 1024, "densenet121": 4, "timm_efficientdet": 1, "llama_v2_7b_16h": 1,
                 "yolov3": 8},
    "inference": {"timm_efficientdet": 32},
}
DONT_CHANGE_BATCH_SIZE = frozenset({"demucs", "pytorch_struct", "pyhpc_turbulent_kinetic_energy",
                                    "vision_maskrcnn"})
# Models whose forward itself takes gradients, so inference runs with grad enabled (PyTorch's pick_grad).
INFERENCE_NEEDS_GRAD = frozenset({"maml"})

# The reasons a model is skipped (the manifest's `skip_reason`; "missing package X" names the package).
NEEDS_DOWNLOAD = "needs download"
MISSING_PACKAGE = "missing package"
NOT_IMPLEMENTED = "not implemented"
NOT_IN_CHECKOUT = "not in the checkout"

# What the checkout keeps when trimmed: code and small text, no data, images, notebooks or checkpoints.
TRIM_FOLDERS = ("torchbenchmark", "utils")
TRIM_FILES = ("LICENSE",)
TRIM_DROP_SUFFIXES = (".ipynb", ".jpg", ".jpeg", ".png", ".gif", ".pt", ".pth", ".pkl", ".npy", ".npz", ".gz",
                      ".zip", ".tar", ".wav", ".mp3", ".mp4", ".bin", ".onnx", ".so")
TRIM_MAX_BYTES = 256 * 1024
COMMIT_FILE = "COMMIT"  # in a trimmed copy: the commit of the checkout it was cut from


# ------------------------------------------------------------------------------------------ the checkout


def find_checkout(path: Optional[str | os.PathLike] = None) -> Path:
    """The TorchBench checkout: `path`, else $TORCHBENCH_DIR; ValueError when neither names a folder holding
    torchbenchmark/models/ (the repository root of pytorch/benchmark, or a trimmed copy of it)."""
    chosen = path or os.environ.get(CHECKOUT_ENV)
    if not chosen:
        raise ValueError(f"--suite torchbench needs --torchbench-dir PATH (or ${CHECKOUT_ENV}): a checkout of "
                         "https://github.com/pytorch/benchmark")
    root = Path(chosen).expanduser().resolve()
    if not (root / "torchbenchmark" / "models").is_dir():
        raise ValueError(f"{root}: not a TorchBench checkout (no torchbenchmark/models/ folder)")
    return root


def list_models(checkout: str | os.PathLike) -> list[str]:
    """The models of a checkout, sorted: every folder of torchbenchmark/models/ holding an __init__.py (except
    the internal `fb` folder), which is how TorchBench's own _list_model_paths finds them."""
    models = Path(checkout) / "torchbenchmark" / "models"
    return sorted(child.name for child in models.iterdir()
                  if child.is_dir() and child.name != "fb" and (child / "__init__.py").is_file())


def checkout_commit(checkout: str | os.PathLike) -> Optional[str]:
    """The commit a checkout was taken at: its COMMIT file (trim_checkout writes one), else the clone's HEAD
    (scraper.repos.git_head, read from .git's files); None when neither knows."""
    marker = Path(checkout) / COMMIT_FILE
    if marker.is_file():
        return marker.read_text(encoding="utf-8").strip()[:64] or None
    return git_head(Path(checkout))


def batch_size_for(name: str, mode: str, requested: Optional[int]) -> Optional[int]:
    """The batch size to ask TorchBench for: `requested` (a models file or --models), else PyTorch's for this
    mode, else None (the model's own default). The models PyTorch never resizes ignore `requested`."""
    if name in DONT_CHANGE_BATCH_SIZE:
        requested = None  # as PyTorch's load_model: these keep their own batch size (or its override below)
    if requested is not None:
        return requested
    return PYTORCH_BATCH_SIZES.get(mode, {}).get(name)


# ------------------------------------------------------------------------------------------ skip reasons


def exception_chain(error: BaseException, limit: int = 16) -> list[BaseException]:
    """`error` and the exceptions it was raised from or during (__cause__ / __context__), first one first."""
    chain: list[BaseException] = []
    while error is not None and len(chain) < limit and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def skip_reason(error: BaseException, checkout: Optional[str | os.PathLike] = None,
                blocked: Iterable[str] = ()) -> Optional[str]:
    """Why building a TorchBench model failed in a way that makes it SKIPPED, or None for a real failure:
    - "needs download": the build tried the network (`blocked` lists what the program refused; its
      NeedsDownload error; Hugging Face's offline-mode errors), or a file of the checkout is missing (the data
      sets and pickles that TorchBench's install.py fetches land in torchbenchmark/data/.data/ and models/);
    - "missing package X": a package the model imports is not installed (not a module of the checkout);
    - "not implemented": TorchBench's own NotImplementedError (a model without eval, CUDA-only, ...);
    - "not in the checkout": no model of that name."""
    chain = exception_chain(error)
    names = {type(exc).__name__ for exc in chain}
    if "NotInCheckout" in names:
        return NOT_IN_CHECKOUT
    if list(blocked) or names & {"NeedsDownload", "OfflineModeIsEnabled", "LocalEntryNotFoundError"}:
        return NEEDS_DOWNLOAD
    if any(missing_checkout_file(exc, checkout) for exc in chain):
        return NEEDS_DOWNLOAD
    for exc in chain:
        if isinstance(exc, ModuleNotFoundError):
            package = (exc.name or "").split(".")[0]
            if package and package not in ("torchbenchmark", "utils"):
                return f"{MISSING_PACKAGE} {package}"
    if any(isinstance(exc, NotImplementedError) for exc in chain):
        return NOT_IMPLEMENTED
    if any("offline mode" in str(exc).lower() or "HF_HUB_OFFLINE" in str(exc) for exc in chain):
        return NEEDS_DOWNLOAD
    return None


def missing_checkout_file(error: BaseException, checkout: Optional[str | os.PathLike]) -> bool:
    """True when `error` says a file inside the checkout is missing (a data set or pickle that TorchBench's
    install.py would have fetched): a FileNotFoundError for such a path, or any error naming the checkout's
    torchbenchmark/data/.data/ folder (yolov3 asserts that its data folder exists)."""
    if checkout is None:
        return False
    root = Path(checkout).resolve()
    if isinstance(error, FileNotFoundError) and error.filename:
        try:
            return Path(os.path.abspath(error.filename)).is_relative_to(root)
        except (TypeError, ValueError):
            return False
    return str(root / "torchbenchmark" / "data" / ".data") in str(error)


# ------------------------------------------------------------------------------------------ models file


_LEFT_OUT = re.compile(r"^#\s*-\s+([A-Za-z0-9_.-]+)\s*:\s*(.+?)\s*$")


def read_left_out(path: str | os.PathLike) -> dict[str, str]:
    """The models a models file leaves out, with the reason: its comment lines `# - name: reason`."""
    left_out = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        match = _LEFT_OUT.match(line.strip())
        if match:
            left_out.setdefault(match.group(1), match.group(2))
    return left_out


def listing(found: list[str], selected: list[str], left_out: dict[str, str]) -> list[str]:
    """--list lines: every model of the checkout, by name when this invocation runs it, else followed by
    `# left out: <reason>`; then the selected names the checkout does not have."""
    chosen = set(selected)
    lines = [name if name in chosen else f"{name}  # left out: {left_out.get(name, 'not selected')}"
             for name in found]
    present = set(found)
    lines += [f"{name}  # {NOT_IN_CHECKOUT}" for name in selected if name not in present]
    return lines


# ------------------------------------------------------------------------------------------ trimming


def trim_checkout(source: str | os.PathLike, dest: str | os.PathLike) -> Counter:
    """Copy the code of a TorchBench checkout (torchbenchmark/, utils/, LICENSE) to `dest`, without data
    folders (.data, .git), notebooks, images, checkpoints and files over TRIM_MAX_BYTES, plus a COMMIT file
    naming the checkout's commit when known. Returns counts of files copied and dropped. `dest` must not exist
    yet (nothing of someone else's is overwritten)."""
    source, dest = Path(source), Path(dest)
    if not (source / "torchbenchmark" / "models").is_dir():
        raise ValueError(f"{source}: not a TorchBench checkout (no torchbenchmark/models/ folder)")
    if dest.exists():
        raise ValueError(f"{dest} exists already; remove it first or choose another folder")
    counts: Counter = Counter()
    for folder in TRIM_FOLDERS:
        for path in sorted((source / folder).rglob("*")):
            if path.is_file() and not path.is_symlink():
                copy_if_code(path, source, dest, counts)
    for name in TRIM_FILES:
        if (source / name).is_file():
            copy_if_code(source / name, source, dest, counts)
    commit = checkout_commit(source)
    if commit:
        (dest / COMMIT_FILE).write_text(commit + "\n", encoding="utf-8")
    return counts


def copy_if_code(path: Path, source: Path, dest: Path, counts: Counter) -> None:
    """Copy one file of the checkout unless it is data; count what was done."""
    relative = path.relative_to(source)
    if any(part in (".data", ".git", "__pycache__") for part in relative.parts):
        counts["dropped_data_folder"] += 1
    elif path.name.lower().endswith(TRIM_DROP_SUFFIXES):
        counts["dropped_data_file"] += 1
    elif path.stat().st_size > TRIM_MAX_BYTES:
        counts["dropped_large_file"] += 1
    else:
        (dest / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest / relative)
        counts["copied"] += 1
        counts["copied_bytes"] += path.stat().st_size


def main(argv: Optional[list[str]] = None) -> int:
    """`python -m scraper.suites.torchbench trim SOURCE DEST`: a code-only copy of a checkout."""
    parser = argparse.ArgumentParser(prog="python -m scraper.suites.torchbench", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    trim = sub.add_parser("trim", help="copy torchbenchmark/ and utils/ of a checkout without data or large "
                                       "files (what --suite torchbench needs; about 5 MB)")
    trim.add_argument("source", type=Path, help="a clone of https://github.com/pytorch/benchmark")
    trim.add_argument("dest", type=Path, help="the new folder (must not exist)")
    listed = sub.add_parser("list", help="print the models of a checkout")
    listed.add_argument("checkout", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            print("\n".join(list_models(find_checkout(args.checkout))))
            return 0
        counts = trim_checkout(args.source, args.dest)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(", ".join(f"{key} {value}" for key, value in sorted(counts.items())), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
