"""The way out of a persistent walled worker (scraper.sandbox.stream): files sent over a real pipe by what may be
a hostile module, written by the host under a folder of its own. Every malformed stream is refused with a reason,
and nothing lands outside that folder."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from scraper.sandbox.folders import Bounds
from scraper.sandbox.stream import (MAX_HEADER, Reader, StreamEnded, StreamError, StreamOverBound, StreamStalled,
                                    receive_files)

BOUNDS = Bounds(bytes=1024 * 1024, entries=20, depth=6)


def frame(path, data: bytes) -> bytes:
    return (json.dumps({"path": path, "size": len(data)}) + "\n").encode() + data


def receive(tmp_path: Path, stream: bytes, count, bounds: Bounds = BOUNDS, close: bool = True, seconds=10.0):
    """Send `stream` through a pipe from a thread (as the sandbox would), receive it into tmp_path/got."""
    read_fd, write_fd = os.pipe()

    def send():
        try:
            for start in range(0, len(stream), 60000):
                os.write(write_fd, stream[start:start + 60000])
        except BrokenPipeError:  # the receiver refused the stream and closed its end
            pass
        if close:
            os.close(write_fd)

    sender = threading.Thread(target=send)
    sender.start()
    folder = tmp_path / "got"
    folder.mkdir()
    try:
        return receive_files(Reader(read_fd, b"", time.monotonic() + seconds), count, folder, bounds), folder
    finally:
        os.close(read_fd)
        sender.join()
        if not close:
            os.close(write_fd)


def everything(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_files_arrive_as_sent(tmp_path):
    data = os.urandom(300_000)  # several pipe buffers
    stream = frame("result.json", b"{}") + frame("debug/run_1/torchinductor/g/output_code.py", data)
    total, folder = receive(tmp_path, stream, 2)
    assert total == 300_002
    assert (folder / "debug/run_1/torchinductor/g/output_code.py").read_bytes() == data
    assert (folder / "result.json").read_bytes() == b"{}"
    assert oct((folder / "result.json").stat().st_mode & 0o777) == "0o644"


@pytest.mark.parametrize("path", ["../outside", "debug/../../outside", "/etc/passwd", "debug//x", "", ".",
                                  "debug/./x", "a b", "debug/\u00e9", "x\n", 7, None, ["a"]])
def test_a_path_that_could_leave_the_folder_or_is_no_name_is_refused(tmp_path, path):
    with pytest.raises(StreamError):
        receive(tmp_path, frame(path, b"abc"), 1)
    assert everything(tmp_path) == {"got"}


@pytest.mark.parametrize("size", [-1, "3", 1.5, True, None])
def test_a_size_that_is_no_size_is_refused(tmp_path, size):
    stream = (json.dumps({"path": "x", "size": size}) + "\n").encode() + b"abc"
    with pytest.raises(StreamError):
        receive(tmp_path, stream, 1)


@pytest.mark.parametrize("count", [-1, 21, "2", 1.0, True, None])
def test_a_count_outside_the_bound_is_refused(tmp_path, count):
    with pytest.raises(StreamError):
        receive(tmp_path, b"", count)


def test_more_bytes_than_the_bound_are_refused_before_they_are_read(tmp_path):
    small = Bounds(bytes=1000, entries=20, depth=6)
    stream = frame("a", b"x" * 600) + (json.dumps({"path": "b", "size": 10 ** 12}) + "\n").encode()
    with pytest.raises(StreamOverBound, match="MiB"):
        receive(tmp_path, stream, 2, small)


def test_a_path_deeper_than_the_bound_is_refused(tmp_path):
    with pytest.raises(StreamOverBound, match="deeper"):
        receive(tmp_path, frame("/".join(["d"] * 7), b""), 1)


def test_more_folders_than_the_bound_are_refused(tmp_path):
    stream = b"".join(frame(f"d{i}/f", b"") for i in range(20))
    with pytest.raises(StreamOverBound, match="entries"):
        receive(tmp_path, stream, 20, Bounds(bytes=1000, entries=20, depth=6))


@pytest.mark.parametrize("stream", [frame("a", b"1") + frame("a", b"2"), frame("a/b", b"1") + frame("a", b"2"),
                                    frame("a", b"1") + frame("a/b", b"2")])
def test_a_path_sent_twice_or_as_file_and_folder_is_refused(tmp_path, stream):
    with pytest.raises(StreamError):
        receive(tmp_path, stream, 2)


def test_an_endless_header_is_refused_without_reading_it_all(tmp_path):
    with pytest.raises(StreamError, match="longer"):
        receive(tmp_path, b"x" * (MAX_HEADER * 50), 1)


@pytest.mark.parametrize("stream", [b"not json\n", b"[1, 2]\n", b'{"path": "a"}\n', b"[" * 5000 + b"\n"])
def test_a_header_that_is_not_one_is_refused(tmp_path, stream):
    with pytest.raises(StreamError):
        receive(tmp_path, stream, 1)


def test_a_stream_that_ends_early_is_refused(tmp_path):
    with pytest.raises(StreamEnded):
        receive(tmp_path, frame("a", b"abcdef")[:-3], 1)


def test_a_stream_that_stalls_is_refused_at_the_deadline(tmp_path):
    started = time.monotonic()
    with pytest.raises(StreamStalled):
        receive(tmp_path, frame("a", b"abcdef")[:-3], 1, close=False, seconds=1.0)
    assert time.monotonic() - started < 5


def test_a_walled_gpu_worker_is_told_where_libcuda_is(monkeypatch):
    """Behind the wall Triton's own `ldconfig -p` fails (146 of 188 modules failed to compile on an H200 before):
    the host finds libcuda and passes its folder as TRITON_LIBCUDA_PATH."""
    import subprocess as sp

    from scraper.suite import orchestrate

    listing = ("\tlibcudart.so.13 (libc6,x86-64) => /usr/local/cuda/lib/libcudart.so.13\n"
               "\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1\n")
    monkeypatch.delenv("TRITON_LIBCUDA_PATH", raising=False)
    monkeypatch.setattr(orchestrate.subprocess, "run", lambda *a, **k: sp.CompletedProcess(a, 0, listing, ""))
    orchestrate.libcuda_dir.cache_clear()
    try:
        assert orchestrate.worker_env("0", scraped=True)["TRITON_LIBCUDA_PATH"] == "/usr/lib/x86_64-linux-gnu"
        assert "TRITON_LIBCUDA_PATH" not in orchestrate.worker_env(None, scraped=True)
        assert "TRITON_LIBCUDA_PATH" not in orchestrate.worker_env("0", scraped=False)  # outside: Triton's own way
    finally:
        orchestrate.libcuda_dir.cache_clear()
