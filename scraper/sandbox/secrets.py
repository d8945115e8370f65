"""What crosses the wall: the environment a sandboxed worker gets, and the text it sends back.

The environment is an allow-list (`worker_environment`): PATH, the locale, the TRITON_/TORCH_/CUDA_/NVIDIA_ (and
thread-count) variables a kernel or model needs, HOME=/tmp; never a variable that looks like a secret, and never
a value naming a host path the sandbox does not show (a cache folder under $TMPDIR, a home directory).

Everything a worker reports (error text, output tails, result fields) is written to kernels.jsonl, caches and
stats, so it is treated as hostile: `clean_result` makes it valid UTF-8 with finite numbers, caps every string
and `scrub` replaces anything that looks like a secret: token formats (GitHub, Hugging Face, OpenAI, Slack, AWS,
GitLab), private-key blocks, password hashes as /etc/shadow holds them, and, by value, every value of this
process's environment that sandboxed code was not given and every value of the `.env` files.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from scraper.sandbox.wall import SCRATCH, visible_inside, visible_roots

REDACTED = "[redacted]"
TEXT_LIMITS = {"error": 500, "output_tail": 400}  # characters kept of these result fields
OTHER_TEXT_LIMIT = 1000  # any other string in a result
MIN_SECRET_LENGTH = 8  # shorter values are not searched for (too many false hits)

# The variables sandboxed code may see (and only where they name no host path it cannot see anyway).
ALLOWED_NAMES = frozenset({"PATH", "LANG", "LANGUAGE", "TZ", "LD_LIBRARY_PATH", "HF_HUB_OFFLINE",
                           "TRANSFORMERS_OFFLINE", "PYTHONHASHSEED"})
ALLOWED_PREFIXES = ("LC_", "TRITON_", "TORCH_", "TORCHINDUCTOR_", "PYTORCH_", "CUDA_", "NVIDIA_", "CUBLAS_",
                    "CUDNN_", "OMP_", "MKL_", "OPENBLAS_")
_SURROGATE = re.compile("[\ud800-\udfff]")  # code points that cannot be written as UTF-8

# Variables kernel modules must not see: they could copy them into their error text, which lands in kernels.jsonl.
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_?KEY|PRIVATE|AUTH", re.IGNORECASE)
_SECRET_TEXT = re.compile("|".join([
    r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})",  # GitHub
    r"\bhf_[A-Za-z0-9]{20,}",  # Hugging Face
    r"\bsk-[A-Za-z0-9_-]{20,}",  # OpenAI-style keys
    r"\bxox[abposr]-[A-Za-z0-9-]{10,}",  # Slack
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",  # AWS access key id
    r"\bglpat-[A-Za-z0-9_-]{20,}",  # GitLab
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:.*?-----END [A-Z0-9 ]*PRIVATE KEY-----|.*)",  # PEM, even cut short
    r"\$(?:1|2[abxy]?|5|6|7|y|gy|sha1|md5)\$[./A-Za-z0-9$]{8,}",  # crypt(3) hashes (/etc/shadow)
    r"(?i:bearer)\s+[A-Za-z0-9._~+/=-]{16,}",  # Authorization header values
]), re.DOTALL)


def looks_secret(name: str, value: str) -> bool:
    """True for a variable whose name looks like a secret's (GITHUB_TOKEN, *_API_KEY, ...) or whose value has a
    token's format."""
    return bool(_SECRET_NAME.search(name) or _SECRET_TEXT.search(value))


def worker_environment() -> dict:
    """What sandboxed code gets of this process's environment: the allow-listed variables (ALLOWED_NAMES,
    ALLOWED_PREFIXES) that do not look like secrets, each with only the host paths a sandbox shows (a list like
    PATH keeps those of its parts; a cache folder elsewhere is dropped), and HOME=/tmp."""
    env = {}
    for name, value in os.environ.items():
        if (name in ALLOWED_NAMES or name.startswith(ALLOWED_PREFIXES)) and not looks_secret(name, value):
            shown = visible_value(value)
            if shown is not None:
                env[name] = shown
    env["HOME"] = SCRATCH
    return env


def trusted_environment() -> dict:
    """This process's environment without the variables that are or look like secrets: for workers that run only
    installed code (timm, Hugging Face, TorchBench models), never scraped code."""
    return {name: value for name, value in os.environ.items() if not looks_secret(name, value)}


def visible_value(value: str) -> str | None:
    """`value` as a sandbox may see it: unchanged when it names no absolute path; else only its parts (split at
    os.pathsep) that are paths a sandbox shows at the same place; None when none is left."""
    parts = value.split(os.pathsep)
    if not any(part.startswith("/") for part in parts):
        return value
    kept = [part for part in parts if part.startswith("/") and visible_inside(part)]
    return os.pathsep.join(kept) if kept else None


def known_secrets() -> list[str]:
    """Exact values to scrub: every value of this process's environment that sandboxed code is not given
    (`worker_environment`), unless it is a path a sandbox shows anyway, and every value of the `.env` files in
    the current folder and the repository root (where scrape_github.py finds GITHUB_TOKEN)."""
    given = worker_environment()
    values = [value for name, value in os.environ.items()
              if given.get(name) != value and not _shown_path(value)]
    repo_root = Path(__file__).resolve().parents[2]
    for dotenv in {Path.cwd() / ".env", repo_root / ".env"}:
        values += _dotenv_values(dotenv)
    return sorted({v for v in values if len(v) >= MIN_SECRET_LENGTH}, key=len, reverse=True)


def _shown_path(value: str) -> bool:
    """True for a value made only of paths a sandbox shows (the Python installation, /usr/bin/...) or folders
    above one (PYENV_ROOT=/root/.pyenv above /root/.pyenv/versions/3.11.7): sandboxed code sees those names by
    itself, in sys.executable and every traceback, and masking them would only mangle its error text."""
    parts = value.split(os.pathsep)
    return value.startswith("/") and all(part.startswith("/") and (visible_inside(part) or _above_shown(part))
                                         for part in parts)


def _above_shown(path: str) -> bool:
    """True for a folder that holds one a sandbox shows."""
    path = os.path.normpath(path).rstrip("/") + "/"
    return any(root.startswith(path) for root in visible_roots())


def _dotenv_values(path: Path) -> list[str]:
    """The values of KEY=VALUE lines of a .env file ([] when there is none)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.lstrip().startswith("#"))
    return [value.strip().strip("'\"") for _, value in pairs]


def scrub(text: str, limit: int, secrets: list[str] | None = None) -> str:
    """`text` with secrets replaced by [redacted] and cut to `limit` characters (cut first, so a secret split by
    the cut is not half kept)."""
    text = _SURROGATE.sub("\ufffd", text[: limit + 200])
    for secret in known_secrets() if secrets is None else secrets:
        text = text.replace(secret, REDACTED)
    return _SECRET_TEXT.sub(REDACTED, text)[:limit]


def clean_result(value, secrets: list[str] | None = None, key: str = "", depth: int = 0):
    """A copy of a worker's result that any JSON writer takes: every string valid UTF-8 (lone surrogates become
    U+FFFD), scrubbed and capped (TEXT_LIMITS by field name), NaN and infinities None, nesting cut at 8 levels.
    A worker's answer is data from a process that ran scraped code."""
    if secrets is None:
        secrets = known_secrets()
    if isinstance(value, str):
        return scrub(value, TEXT_LIMITS.get(key, OTHER_TEXT_LIMIT), secrets)
    if depth >= 8:
        return None
    if isinstance(value, dict):
        return {scrub(str(k), 100, secrets): clean_result(v, secrets, str(k), depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_result(item, secrets, key, depth + 1) for item in value[:1000]]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
