"""Run a build's stages in order, each resumable (CORPUS/build.json):

    {"stages": {"suite:timm": {"state": "done", "fingerprint": "...", "run": "...", "exit": 0, "seconds": 96.1},
                ...}, "plan": [...], "finished": true}

A stage is skipped when build.json says it is done with the same fingerprint (its command and the runs of the
stages it reads); otherwise it runs: after a kill, the stage that was running runs again and resumes by its own
means (the suite's manifest, the generator's finished archives, the check's written verdicts), so a killed build
rerun ends with the same files. A stage that fails is recorded with its exit status and the last lines of its log
(CORPUS/logs/<stage>.log); the stages that read its output are left for the next run, the others go on.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from scraper import corpus as layout
from scraper.builder.plan import Stage
from scraper.fileio import atomic_write_json
from scraper.paths import PACKAGE_PARENT

log = logging.getLogger("scraper.builder")
LOGS = "logs"


def read_state(corpus: Path) -> dict:
    """build.json, or a fresh state; an unreadable one is set aside (build.json.broken), not trusted."""
    path = corpus / layout.BUILD
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(state, dict) and isinstance(state.get("stages"), dict):
            return state
    except FileNotFoundError:
        return {"stages": {}}
    except (OSError, ValueError):
        pass
    log.warning("%s is not a build state: set aside as %s.broken, every stage runs again", path, path.name)
    os.replace(path, path.with_name(path.name + ".broken"))
    return {"stages": {}}


def save_state(corpus: Path, state: dict) -> None:
    atomic_write_json(corpus / layout.BUILD, state)


def run_stages(corpus: Path, stages: list[Stage], state: dict, quiet: bool = False) -> dict:
    """Run what is not done yet; returns the state (also written to build.json after every stage)."""
    state["plan"] = [{"name": s.name, "argv": s.argv, "seconds": s.seconds} for s in stages]
    state["finished"] = False
    runs = {name: entry.get("run") for name, entry in state["stages"].items() if entry.get("state") == "done"}
    blocked: set[str] = set()
    started = time.monotonic()
    for number, stage in enumerate(stages, 1):
        prefix = f"[{number}/{len(stages)}] {stage.name}"
        if stage.later is not None and not blocked & set(stage.after):
            made = stage.later()
            if made is None:  # nothing to do (a shard without archives): done, and says so
                runs[stage.name] = f"nothing@{number}"
                state["stages"][stage.name] = {"state": "done", "fingerprint": "nothing", "run": runs[stage.name],
                                               "exit": None, "seconds": 0.0, "note": "nothing to do"}
                say(quiet, f"{prefix}: nothing to do")
                continue
            stage.argv = made
        fingerprint = stage.fingerprint(runs)
        entry = state["stages"].get(stage.name, {})
        if entry.get("state") == "done" and entry.get("fingerprint") == fingerprint:
            say(quiet, f"{prefix}: done in an earlier run, kept")
            continue
        if blocked & set(stage.after) and not stage.always:
            state["stages"][stage.name] = {"state": "blocked", "by": sorted(blocked & set(stage.after))}
            blocked.add(stage.name)
            say(quiet, f"{prefix}: not run, {', '.join(sorted(blocked & set(stage.after)))} failed")
            continue
        say(quiet, f"{prefix}: running{eta(stages[number - 1:], started)}")
        entry = run_stage(corpus, stage, fingerprint, state)
        if entry["state"] == "done":
            runs[stage.name] = entry["run"]
            say(quiet, f"{prefix}: done in {entry['seconds']:.0f} s (exit {entry['exit']})")
        else:
            blocked.add(stage.name)
            say(quiet, f"{prefix}: FAILED (exit {entry['exit']}), see {entry['log']}:\n{entry['tail']}")
    state["finished"] = not blocked
    atomic_write_json(corpus / layout.BUILD, state)
    return state


def run_stage(corpus: Path, stage: Stage, fingerprint: str, state: dict) -> dict:
    """Run one stage's command, its output to CORPUS/logs/<stage>.log; its entry in the state."""
    logs = corpus / LOGS
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{stage.name.replace(':', '-')}.log"
    state["stages"][stage.name] = {"state": "running", "fingerprint": fingerprint, "since": now()}
    atomic_write_json(corpus / layout.BUILD, state)
    began = time.monotonic()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PACKAGE_PARENT),
                                                                     os.environ.get("PYTHONPATH")])))
    with open(log_path, "ab") as handle:
        handle.write(f"$ {' '.join(stage.command())}\n".encode())
        handle.flush()
        status = subprocess.run(stage.command(), stdout=handle, stderr=subprocess.STDOUT, env=env,
                                cwd=PACKAGE_PARENT).returncode
    entry = {"state": "done" if status in stage.done_with else "failed", "fingerprint": fingerprint,
             "run": f"{fingerprint}@{now()}", "exit": status, "seconds": round(time.monotonic() - began, 1),
             "log": str(log_path.relative_to(corpus))}
    if entry["state"] == "failed":
        entry["tail"] = tail(log_path)
    state["stages"][stage.name] = entry
    atomic_write_json(corpus / layout.BUILD, state)
    return entry


def eta(left: list[Stage], started: float) -> str:
    """', about N s left' from the planned seconds of the stages left (those with a plan)."""
    planned = sum(stage.seconds or 0 for stage in left)
    return f" (elapsed {time.monotonic() - started:.0f} s, about {planned:.0f} s planned left)" if planned else ""


def tail(path: Path, lines: int = 5) -> str:
    text = path.read_bytes()[-8192:].decode(errors="replace")
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def summary(corpus: Path, state: dict) -> str:
    """A few lines: stages by state, the datasets' rows and the pair check, read from report.json."""
    states: dict[str, list[str]] = {}
    for name, entry in state["stages"].items():
        states.setdefault(entry.get("state", "?"), []).append(name)
    lines = ["stages: " + "; ".join(f"{key} {len(names)}" for key, names in sorted(states.items()))]
    report = read_json(corpus / layout.REPORT_JSON)
    for task, name in layout.DATASET_FILES.items():
        rows = count_rows(corpus / layout.DATASETS / name)
        if rows is not None:
            lines.append(f"dataset {task}: {rows} rows  ({layout.DATASETS}/{name})")
    if report:
        lines.append(f"report: {corpus / layout.REPORT_HTML}")
    return "\n".join(lines)


def count_rows(path: Path) -> Optional[int]:
    data = read_json(path)
    return len(data) if isinstance(data, list) else None


def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
