"""Issue 23, route 13: the generator never writes deeper than a few folders, and its own --clean works at any
depth. The hostile input: a zip whose kernel lies 1,800 folders deep (the generator wrote its module as deep,
and --clean then raised RecursionError), and output that an older version wrote that deep."""

from __future__ import annotations

import json
import os
import zipfile

from scraper.generator.main import main as generator_main
from scraper.generator.write import MAX_FOLDERS

KERNEL = '''import triton
import triton.language as tl


@triton.jit
def deep_kernel(x_ptr):
    tl.store(x_ptr, 1)
'''


def test_a_kernel_1800_folders_deep_is_written_shallow_and_cleaned(tmp_path):
    downloads, out = tmp_path / "downloads", tmp_path / "out"
    downloads.mkdir()
    deep = "/".join(["a"] * 1800) + "/ops.py"
    with zipfile.ZipFile(downloads / "owner__deep.zip", "w") as archive:
        archive.writestr(f"owner-deep-0123abc/{deep}", KERNEL)
        archive.writestr("owner-deep-0123abc/pkg/ops.py", KERNEL)
    assert generator_main(["--generate-all", "--download-dir", str(downloads), "-o", str(out), "-q"]) == 0
    rows = [json.loads(line) for line in (out / "kernels.jsonl").read_text().splitlines()]
    assert sorted(row["path"] for row in rows) == sorted([deep, "pkg/ops.py"])
    assert all(row["file"].count("/") <= MAX_FOLDERS + 1 and (out / row["file"]).is_file() for row in rows)
    assert len({row["file"] for row in rows}) == 2
    # what an older version left: the same kernel's folder 1,800 deep in the repository's output folder
    fd = os.open(out / rows[0]["file"].split("/")[0], os.O_RDONLY)
    for _ in range(1800):
        os.mkdir("old", dir_fd=fd)
        child = os.open("old", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(os.open("old.py", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
    os.close(fd)
    assert generator_main(["--generate-all", "--download-dir", str(downloads), "-o", str(out), "--clean", "-q"]) == 0
    assert [row["file"].count("/") <= MAX_FOLDERS + 1 for row in map(json.loads, (out / "kernels.jsonl").open())] \
        == [True, True]
    assert not any(name == "old.py" for _, _, names in os.walk(out) for name in names)
