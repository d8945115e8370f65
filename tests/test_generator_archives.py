"""Safe reading of repositories (scraper.generator.archives) and provenance (scraper.generator.provenance)."""

from __future__ import annotations

import dataclasses
import json
import zipfile

import pytest

from hostile_zip import RawMember, member, peak_growth_mib, write_zip, zeros
from scraper.generator.archives import ArchiveError, decode_source, read_repository, read_zip
from scraper.generator.provenance import load_manifest, provenance_for
from scraper.repos import repo_of_archive as repo_from_archive_name
from tests.generator_helpers import FIXTURE_REPO, ZIPBALL_TOP, make_zipball

FIXTURE_PY = sorted(p.relative_to(FIXTURE_REPO).as_posix() for p in FIXTURE_REPO.rglob("*.py"))


def test_zip_and_directory_give_the_same_files(tmp_path):
    archive = make_zipball(FIXTURE_REPO, tmp_path / "acme__kernels.zip")
    from_zip = read_repository(archive)
    from_dir = read_repository(FIXTURE_REPO)
    assert from_zip.top == ZIPBALL_TOP and from_zip.commit_hint == "1a2b3c4"
    assert sorted(f.path for f in from_zip.files) == FIXTURE_PY == sorted(f.path for f in from_dir.files)
    assert {f.path: f.text for f in from_zip.files} == {f.path: f.text for f in from_dir.files}
    assert not from_zip.problems and "Permission is hereby granted" in from_zip.license_text


def test_zip_with_escaping_entry_keeps_the_rest(tmp_path):
    extra = {f"{ZIPBALL_TOP}/../../evil.py": b"import triton\n", "/abs.py": b"x = 1\n"}
    archive = make_zipball(FIXTURE_REPO, tmp_path / "a.zip", extra=extra)
    source = read_zip(archive)
    assert source.top == ZIPBALL_TOP  # the bad entries do not break the zipball layout
    assert sorted(p.reason for p in source.problems) == ["unsafe_path", "unsafe_path"]
    assert sorted(f.path for f in source.files) == FIXTURE_PY


def test_size_caps_are_read_not_trusted(tmp_path):
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as handle:
        handle.writestr("r-x-abcdef1/big.py", b"#" * 5000)
        handle.writestr("r-x-abcdef1/small.py", b"x = 1\n")
    source = read_zip(archive, max_file_bytes=4096)
    assert [f.path for f in source.files] == ["small.py"]
    assert [(p.path, p.reason) for p in source.problems] == [("big.py", "too_large")]
    source = read_zip(archive, max_file_bytes=10_000, max_total=5000)
    assert [f.path for f in source.files] == ["big.py"] and source.problems[0].reason == "archive_cap"


MiB = 1 << 20


def bomb(method: int, size: int, name: str) -> RawMember:
    return dataclasses.replace(zeros(method, size), name=name)


@pytest.mark.timeout(120)
def test_bzip2_and_lzma_bombs_cost_no_memory(tmp_path):
    """zipfile decompresses a bzip2 or LZMA chunk whole before any cap: 128 MiB from ~100 bytes at once."""
    archive = write_zip(tmp_path / "o__bomb.zip", [
        bomb(zipfile.ZIP_BZIP2, 128 * MiB, "o-bomb-abcdef1/k.py"),
        bomb(zipfile.ZIP_LZMA, 64 * MiB, "o-bomb-abcdef1/l.py"),
        member("o-bomb-abcdef1/ok.py", b"import triton\n", zipfile.ZIP_BZIP2),
    ])
    growth, printed = peak_growth_mib(
        "from scraper.generator.archives import read_repository",
        f"source = read_repository({str(archive)!r})\n"
        "print([f.path for f in source.files], sorted((p.path, p.reason) for p in source.problems))")
    assert printed.strip() == "['ok.py'] [('k.py', 'too_large'), ('l.py', 'too_large')]"
    assert growth < 32


def test_entries_sharing_data_refuse_the_archive(tmp_path):
    """200 directory entries on one 64 MiB member: each read stopped at the cap, but 200 caps were decompressed."""
    shared = bomb(zipfile.ZIP_DEFLATED, 64 * MiB, "a.py")
    archive = write_zip(tmp_path / "o__shared.zip", [shared] + [dataclasses.replace(shared, shares=0)] * 199)
    with pytest.raises(ArchiveError, match="overlap"):
        read_repository(archive)


def test_archive_budget_counts_bytes_of_refused_files(tmp_path):
    archive = write_zip(tmp_path / "o__many.zip", [bomb(zipfile.ZIP_DEFLATED, 4 * MiB, f"m{i}.py") for i in range(20)])
    source = read_zip(archive, max_file_bytes=MiB, max_total=8 * MiB)
    reasons = [p.reason for p in source.problems]
    assert reasons.count("too_large") <= 8 and reasons.count("archive_cap") == 20 - reasons.count("too_large")


def test_huge_central_directory_is_refused(tmp_path):
    """350 000 entries: zipfile would hold them all in memory (~170 MiB) before any per-entry cap."""
    archive = write_zip(tmp_path / "o__many.zip", [RawMember(f"{i:x}.py") for i in range(350_000)])
    with pytest.raises(ArchiveError, match="central directory"):
        read_repository(archive)


def test_corrupt_and_missing_archives_raise_archive_error(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(ArchiveError):
        read_repository(bad)
    with pytest.raises(ArchiveError):
        read_repository(tmp_path / "missing.zip")


def test_decoding():
    assert decode_source("é".encode("utf-8")) == ("é", None)
    assert decode_source(b"\xef\xbb\xbfx = 1\n") == ("x = 1\n", None)
    assert decode_source(b"# -*- coding: latin-1 -*-\nx = '\xe9'\n")[0].endswith("x = 'é'\n")
    text, error = decode_source(b"x = '\xe9'\n")
    assert text == "x = '\ufffd'\n" and "utf-8" in error


def test_symlink_leaving_the_tree_is_refused(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (tmp_path / "secret.py").write_text("SECRET = 1\n")
    (repo / "ok.py").write_text("x = 1\n")
    (repo / "link.py").symlink_to(tmp_path / "secret.py")
    source = read_repository(repo)
    assert [f.path for f in source.files] == ["ok.py"]
    assert [(p.path, p.reason) for p in source.problems] == [("link.py", "unsafe_path")]


def test_provenance_from_manifest_latest_line_wins(tmp_path):
    archive = make_zipball(FIXTURE_REPO, tmp_path / "acme__kernels.zip")
    lines = [
        {"full_name": "acme/kernels", "commit_sha": "0" * 40, "stars": 1, "license": "MIT", "archive": "old.zip"},
        {"full_name": "acme/kernels", "commit_sha": "f" * 40, "stars": 150, "license": "Apache-2.0",
         "archive": "acme__kernels.zip", "html_url": "https://github.com/acme/kernels"},
    ]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines) + "{torn")
    manifest = load_manifest(tmp_path)
    assert list(manifest) == ["acme__kernels.zip"]
    prov = provenance_for(read_repository(archive), manifest)
    assert (prov.repo, prov.commit, prov.stars, prov.license, prov.origin) == \
        ("acme/kernels", "f" * 40, 150, "Apache-2.0", "manifest")
    assert prov.slug == "acme__kernels"


def test_provenance_without_manifest_is_what_the_archive_tells(tmp_path):
    archive = make_zipball(FIXTURE_REPO, tmp_path / "acme__kernels.zip")
    prov = provenance_for(read_repository(archive), {})
    assert (prov.repo, prov.commit, prov.stars, prov.license) == ("acme/kernels", "1a2b3c4", None, "MIT")
    assert repo_from_archive_name("local__mydir.zip") == "local/mydir"
    assert repo_from_archive_name("plain.zip") == "plain"
