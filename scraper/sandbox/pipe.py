"""Reading a sandboxed worker's answers: one line at a time from its stdout, never waiting past a deadline (a
hostile or hung worker must not stall the pipeline). Used by the validate pool and the suite's persistent
workers."""

from __future__ import annotations

import os
import select
import time
from typing import Optional


def read_line(fd: int, buffer: bytes, deadline: float) -> tuple[Optional[bytes], bytes]:
    """(the next line without its newline, what is left in the buffer). The line is None when the deadline
    passed first and b"" when the worker closed its stdout."""
    while b"\n" not in buffer:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None, buffer
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"", buffer
        buffer += chunk
    line, buffer = buffer.split(b"\n", 1)
    return line, buffer
