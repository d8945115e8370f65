"""scraper.validate on the real Inductor kernels of tests/fixtures (extracted by the real stage, scraper.inductor).

`imports` runs on all 312; `compiles` on one kernel of each kind (CPU is scarce), with oracles read from the
fixture text (the decorator's num_warps, the user kernel's constants), not from the code under test.
"""

from __future__ import annotations

import json
import re

import pytest

from scraper.records import KernelRecord, read_records
from scraper.stats import Stats
from scraper.validate import level_fractions, meets, validate_records

TRITON_CALL = re.compile(r"async_compile\.triton\(")


@pytest.fixture(scope="module")
def inductor_records(tcd_roots, tmp_path_factory) -> list[KernelRecord]:
    """Every kernel of the fixtures as the Inductor stage writes it."""
    from scraper.inductor import extract_kernels

    out = tmp_path_factory.mktemp("inductor_kernels")
    extract_kernels(sorted(tcd_roots.values()), out)
    return read_records(out / "kernels.jsonl")


def fixture_kernel_count(tcd_roots) -> int:
    """The oracle: `async_compile.triton(` calls counted in the text of every output_code.py."""
    return sum(len(TRITON_CALL.findall(p.read_text())) for root in tcd_roots.values()
               for p in root.rglob("output_code.py"))


def test_every_fixture_kernel_imports_in_the_sandbox(inductor_records, tcd_roots):
    stats = Stats("validate")
    validate_records(inductor_records, levels=("imports",), jobs=2, stats=stats)
    assert len(inductor_records) == fixture_kernel_count(tcd_roots) == 312
    failed = [(r.name, r.validation["imports"]) for r in inductor_records if not r.imports]
    assert failed == []
    assert all(r.validation["imports"]["object"] == "InterpretedFunction" for r in inductor_records)
    distinct = {json.dumps([r.name, r.code, r.signature, r.constants, r.launch], sort_keys=True)
                for r in inductor_records}
    assert stats.counts["validate_imports_ok"] == 312
    assert stats.counts["validate_jobs_run"] == len(distinct) < 312  # identical kernels share one check
    assert stats.counts["validate_jobs_run"] + stats.counts["validate_duplicates_shared"] == 312
    assert all(r.compiles is None for r in inductor_records)  # not asked for
    fractions = level_fractions(inductor_records)
    assert fractions == {"inductor": {"records": 312, "parses": 1.0, "imports": 1.0, "compiles": 0.0,
                                      "checked": {"parses": 312, "imports": 312, "compiles": 0}}}
    assert all(meets(r, "imports") and not meets(r, "compiles") for r in inductor_records)


def one_of_each_kind(records: list[KernelRecord]) -> dict[str, KernelRecord]:
    """First kernel of each kind, preferring a 2-D tiled pointwise kernel (YBLOCK and XBLOCK)."""
    chosen = {}
    for rec in sorted(records, key=lambda r: (r.kind, "YBLOCK" not in (r.signature or {}), r.name)):
        chosen.setdefault(rec.kind, rec)
    return chosen


@pytest.fixture(scope="module")
def compiled(inductor_records) -> dict[str, KernelRecord]:
    picks = one_of_each_kind([KernelRecord.from_dict(r.to_dict()) for r in inductor_records])
    validate_records(list(picks.values()), jobs=2)
    return picks


def test_one_kernel_of_each_kind_compiles_for_sm90(compiled):
    assert set(compiled) == {"pointwise", "reduction", "persistent_reduction", "template", "user_defined"}
    for kind, rec in compiled.items():
        info = rec.validation["compiles"]
        assert rec.compiles is True, (kind, info)
        assert info["stages"] == ["ttir", "ttgir", "llir", "ptx"]
        assert info["ptx_target"].startswith("sm_90") and info["target"] == "cuda:90:32"
        assert info["triton"] == rec.validation["triton"] == "3.9.0"
        assert meets(rec, "compiles")


def test_block_sizes_come_from_inductor_heuristics(compiled):
    pointwise = compiled["pointwise"].validation["compiles"]
    assert pointwise["config_source"] == "inductor_heuristics"
    hints = compiled["pointwise"].launch["size_hints"]
    for block, dim in (("XBLOCK", "x"), ("YBLOCK", "y")):
        value = pointwise["config"][block]
        assert value & (value - 1) == 0 and value <= max(hints[dim], 1) * 2  # a power of two near the hint
    reduction = compiled["reduction"].validation["compiles"]
    assert reduction["config_source"] == "inductor_heuristics" and {"XBLOCK", "R0_BLOCK"} <= set(reduction["config"])


def test_template_and_user_kernel_configs_match_the_fixture_text(compiled):
    template = compiled["template"]
    decorator = template.original.split("@triton.jit")[0]
    expected = {key: int(re.search(rf"{key}=(\d+)", decorator).group(1)) for key in ("num_warps", "num_stages")}
    assert template.validation["compiles"]["config"] == expected
    user = compiled["user_defined"]
    block = int(re.search(r"'constants': \{'BLOCK': (\d+)\}", user.original).group(1))
    assert user.validation["compiles"]["config"] == {"BLOCK": block} == {"BLOCK": 256}


BAD_BLOCK = '''
import triton
import triton.language as tl


@triton.jit
def odd(x_ptr, n):
    offsets = tl.arange(0, 3)  # not a power of two: only the compiler notices
    tl.store(x_ptr + offsets, tl.load(x_ptr + offsets, mask=offsets < n), mask=offsets < n)
'''

NEEDS_BLOCK = BAD_BLOCK.replace("def odd(x_ptr, n)", "def odd(x_ptr, n, BLOCK: tl.constexpr)")


def test_compile_errors_and_missing_signatures_are_reported():
    records = [
        KernelRecord(name="odd", code=BAD_BLOCK, source="github", signature={"x_ptr": "*fp32", "n": "i32"}),
        KernelRecord(name="odd", code=NEEDS_BLOCK, source="github",
                     signature={"x_ptr": "*fp32", "n": "i32", "BLOCK": "constexpr"}),
        KernelRecord(name="odd", code=BAD_BLOCK + "\n# no signature\n", source="github"),
    ]
    stats = Stats("validate")
    validate_records(records, jobs=1, stats=stats)
    bad, missing, unknown = records
    assert bad.imports is True and bad.compiles is False
    assert bad.validation["compiles"]["error_class"] == "CompilationError"
    assert bad.validation["compiles"]["error"] == \
        "CompilationError: arange's range must be a power of 2 (kernel line 2)"  # line 2 of the function
    assert missing.compiles is False
    assert missing.validation["compiles"]["error"] == "ValueError: no value for constexpr BLOCK"
    assert unknown.compiles is None and unknown.validation["compiles"]["skipped"] == "no known signature"
    assert stats.counts["validate_compiles_skipped"] == 1 and stats.counts["validate_compiles_failed"] == 2
