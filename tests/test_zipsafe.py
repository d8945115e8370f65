"""scraper.zipsafe against honest archives (written by zipfile) and hostile ones (written byte by byte)."""

from __future__ import annotations

import dataclasses
import os
import random
import zipfile

import pytest

from hostile_zip import RawMember, member, peak_growth_mib, write_zip, zeros
from scraper.zipsafe import Limits, MemberRefused, SafeZip, UnsafeArchive, safe_member_path

MiB = 1 << 20
METHODS = [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]


def named(raw: RawMember, name: str, **changes) -> RawMember:
    return dataclasses.replace(raw, name=name, **changes)


@pytest.mark.parametrize("method", METHODS)
def test_honest_archive_reads_exactly_what_zipfile_wrote(tmp_path, method):
    files = {"a/k.py": os.urandom(3000) + b"x" * 200_000, "a/empty.py": b"", "a/LICENSE": b"MIT License\n" * 9}
    path = tmp_path / "honest.zip"
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        archive.writestr("a/", b"")
        for name, data in files.items():
            archive.writestr(name, data)
    with SafeZip(path) as archive:
        read = {info.filename: archive.read(info) for info in archive.members if not info.is_dir()}
        assert archive.read_prefix(archive.members[-1], 11) == b"MIT License"
    assert read == files


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_bomb_member_stops_at_its_cap_whatever_the_method(tmp_path, method):
    path = write_zip(tmp_path / "bomb.zip", [named(zeros(method, 64 * MiB), "bomb.py")])
    with SafeZip(path, Limits(member_bytes=MiB)) as archive:
        with pytest.raises(MemberRefused) as refused:
            archive.read(archive.members[0])
        assert refused.value.reason == "too_large"
        assert archive.budget >= Limits().total_bytes - MiB - 1  # only the cap was decompressed
        assert archive.read_prefix(archive.members[0], 100) == bytes(100)


@pytest.mark.timeout(120)
def test_bzip2_bomb_costs_no_memory(tmp_path):
    """zipfile decompresses a bzip2 chunk whole: a 128 MiB member of ~100 bytes grew the process by 128 MiB+."""
    path = write_zip(tmp_path / "bomb.zip", [named(zeros(zipfile.ZIP_BZIP2, 128 * MiB), "bomb.py")])
    growth, printed = peak_growth_mib(
        "from scraper.zipsafe import SafeZip, MemberRefused",
        f"with SafeZip({str(path)!r}) as z:\n"
        "    try:\n        z.read(z.members[0])\n    except MemberRefused as e:\n        print(e.reason)")
    assert printed.strip() == "too_large"
    assert growth < 32


def test_damaged_and_lying_members_are_bad_zip(tmp_path):
    honest = member("ok.py", b"x = 1\n" * 1000)
    path = write_zip(tmp_path / "bad.zip", [
        honest,
        named(honest, "crc.py", crc=honest.crc ^ 1),  # bytes that do not match their CRC
        named(member("", b"y" * 5000), "long.py", size=100),  # holds more than it declares
        named(honest, "cut.py", payload=honest.payload[:20]),  # deflate stream cut short
    ])
    with SafeZip(path) as archive:
        ok, *bad = archive.members
        assert archive.read(ok) == b"x = 1\n" * 1000
        for info in bad:
            with pytest.raises(zipfile.BadZipFile):
                archive.read(info)


def test_entries_sharing_data_are_refused(tmp_path):
    """The non-recursive zip bomb: many directory entries pointing at one member's data (Python 3.11's zipfile
    reads each of them); also an entry pointing inside another member's data."""
    bomb = named(zeros(zipfile.ZIP_DEFLATED, 16 * MiB), "a.py")
    shared = write_zip(tmp_path / "shared.zip", [bomb] + [named(bomb, "a.py", shares=0) for _ in range(100)])
    with pytest.raises(UnsafeArchive, match="overlap"):
        SafeZip(shared)
    with zipfile.ZipFile(shared) as plain:  # the oracle: zipfile itself sees 101 readable members
        assert len(plain.infolist()) == 101 and plain.open(plain.infolist()[50]).read(10) == bytes(10)


def test_overlap_hidden_by_a_long_local_header_is_caught_on_read(tmp_path):
    path = write_zip(tmp_path / "two.zip", [member("a.py", b"a" * 100), member("b.py", b"b" * 100)])
    data = bytearray(path.read_bytes())
    data[28:30] = (60).to_bytes(2, "little")  # a.py's local extra field now runs into b.py
    path.write_bytes(bytes(data))
    with SafeZip(path) as archive, pytest.raises(UnsafeArchive, match="overlaps"):
        archive.read(archive.members[0])


def test_directory_over_its_cap_is_refused_before_zipfile_parses_it(tmp_path):
    path = write_zip(tmp_path / "many.zip", [RawMember(f"{i:x}") for i in range(20_000)])
    with pytest.raises(UnsafeArchive, match="central directory"):
        SafeZip(path, Limits(directory_bytes=512 * 1024))
    with SafeZip(path, Limits(members=1000)) as archive:
        assert len(archive.members) == 1000 and archive.left_out == 19_000


def test_budget_counts_bytes_of_refused_members(tmp_path):
    members = [named(zeros(zipfile.ZIP_DEFLATED, 4 * MiB), f"m{i}.py") for i in range(20)]
    path = write_zip(tmp_path / "many_bombs.zip", members)
    reasons = []
    with SafeZip(path, Limits(member_bytes=MiB, total_bytes=8 * MiB)) as archive:
        for info in archive.members:
            with pytest.raises(MemberRefused) as refused:
                archive.read(info)
            reasons.append(refused.value.reason)
    too_large = reasons.count("too_large")
    assert too_large * MiB <= 8 * MiB < (too_large + 1) * (MiB + 1)
    assert reasons == ["too_large"] * too_large + ["archive_cap"] * (20 - too_large)


def test_encrypted_and_unknown_methods_are_not_read(tmp_path):
    honest = member("a.py", b"x = 1\n")
    path = write_zip(tmp_path / "odd.zip", [honest, named(honest, "b.py", method=9)])  # 9: deflate64
    data = bytearray(path.read_bytes())
    central = data.index(b"PK\x01\x02")
    data[central + 8] |= 1  # a.py's directory entry now says "encrypted"
    path.write_bytes(bytes(data))
    with SafeZip(path) as archive:
        for info, why in zip(archive.members, ("encrypted", "compression method 9")):
            with pytest.raises(MemberRefused, match=why) as refused:
                archive.read(info)
            assert refused.value.reason == "unsupported"


def test_not_a_zip(tmp_path):
    for content in (b"", b"PK\x03\x04 this is not a zip", b"PK\x05\x06" + b"\xff" * 18):
        path = tmp_path / "x.zip"
        path.write_bytes(content)
        with pytest.raises(zipfile.BadZipFile):
            SafeZip(path)


@pytest.mark.parametrize("name", ["../evil.py", "/etc/evil.py", "a/../../evil.py", "C:/evil.py", "..\\evil.py",
                                  "", "./"])
def test_escaping_entries_are_refused(name):
    assert safe_member_path(name) is None


def test_safe_names_are_normalized():
    assert safe_member_path("a/./b//c.py") == "a/b/c.py"
    assert safe_member_path("a\\b.py") == "a/b.py"
    assert safe_member_path("a..b/c.py") == "a..b/c.py"


def test_damaged_archives_raise_only_the_documented_errors(tmp_path):
    """400 seeded random damages of honest archives (each method): opening and reading raise BadZipFile
    (UnsafeArchive included) or MemberRefused, never anything else; the generator turns them into ArchiveError
    or a listed problem."""
    from scraper.generator.archives import ArchiveError, read_repository

    rng = random.Random(12)
    honest = []
    for method in METHODS:
        path = tmp_path / f"honest{method}.zip"
        with zipfile.ZipFile(path, "w", compression=method) as archive:
            archive.writestr("t/a.py", b"import triton\n" * 50)
            archive.writestr("t/b.py", bytes(rng.randrange(256) for _ in range(300)) + b"x" * 3000)
        honest.append(path.read_bytes())
    path = tmp_path / "damaged.zip"
    for _ in range(400):
        data = bytearray(rng.choice(honest))
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data[: rng.randrange(len(data))] if rng.random() < 0.1 else data))
        try:
            with SafeZip(path, Limits(member_bytes=1 << 16)) as archive:
                for info in archive.members:
                    try:
                        archive.read(info)
                    except (zipfile.BadZipFile, MemberRefused):
                        pass
        except zipfile.BadZipFile:
            pass
        try:
            read_repository(path)
        except ArchiveError:
            pass
