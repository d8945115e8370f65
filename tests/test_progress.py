"""Progress and log messages as users see them: a bar on a terminal (also one that reports 0 columns), log lines
above it rather than inside it, and occasional plain lines when stderr is a file or a pipe."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = """
import logging, time
from scraper.cli import setup_logging
from scraper.progress import progress
setup_logging()
log = logging.getLogger("demo")
for i in progress(range(4), desc="graphs", unit="graph"):
    if i == 2:
        log.warning("a message in the middle of the run")
    time.sleep(0.05)
"""


def run_in_pty(columns: int) -> str:
    """The script's stderr as a terminal of `columns` columns shows it (\\r-separated redraws included)."""
    main, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    process = subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=secondary, env={**os.environ, "COLUMNS": ""})
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(main, 4096)
        except OSError:  # EIO: the script ended and closed its end
            break
        if not data:
            break
        chunks.append(data)
    process.wait(timeout=60)
    os.close(main)
    return b"".join(chunks).decode("utf-8", "replace")


def test_a_terminal_of_zero_columns_still_gets_a_bar_and_messages_on_their_own_line():
    shown = run_in_pty(0)
    assert re.search(r"graphs: 100%\|.*\| 4/4", shown)  # the bar was drawn at a usable width
    lines = re.split(r"[\r\n]+", shown)
    message = [line for line in lines if "a message in the middle of the run" in line]
    assert message == ["WARNING demo: a message in the middle of the run"]  # whole, not glued to the bar


def test_off_a_terminal_progress_is_a_few_plain_lines(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True,
                          env={**os.environ, "TRITON_DATA_PROGRESS_SECONDS": "0"}, timeout=60)
    lines = done.stderr.splitlines()
    assert "\r" not in done.stderr and "|" not in done.stderr  # no bar redraws in a log file
    counts = [line for line in lines if line.startswith("INFO scraper.progress: graphs: ")]
    assert [re.search(r"graphs: (\d+)/4", line).group(1) for line in counts] == ["1", "2", "3", "4"]
    assert "WARNING demo: a message in the middle of the run" in lines
