"""A name bound inside a compound top-level statement (if/try/with/for) brings the whole statement, so the
generated module behaves as the original: no assignment lifted out of its guard (timm's `_USE_FUSED_ATTN`).

The oracle for behaviour is the original file itself: both it and the generated module are run in a
subprocess (these are the tests' own fixture texts, never scraped code) and must print the same thing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from scraper.generator.closure import RepoIndex, extract_closure
from tests.generator_helpers import coarse_unbound_names

# timm/layers/config.py (huggingface/pytorch-image-models), the shape the bug was found on: a first plain
# assignment, then a guarded one; the guard also defines a helper reading another module constant.
TIMM_CONFIG = '''import os
import warnings

_SOURCE = 'environment'
_USE_FUSED_ATTN = 0
if 'TIMM_FUSED_ATTN' in os.environ:
    _USE_FUSED_ATTN = int(os.environ['TIMM_FUSED_ATTN'])

    def _describe():
        return _SOURCE

if 'TIMM_REENTRANT_CKPT' in os.environ:
    _USE_REENTRANT_CKPT = bool(os.environ['TIMM_REENTRANT_CKPT'])
else:
    _USE_REENTRANT_CKPT = False  # defaults to disabled (off)

with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    _PID = os.getpid() > 0

if hasattr(os, 'getpid'):
    def backend():
        return 'fast'
else:
    def backend():
        return 'slow'

try:
    import not_an_installed_package_xyz as _ext
    HAS_EXT = True

    def ext_name():
        return _ext.__name__
except ImportError:
    HAS_EXT = False

    def ext_name():
        return None


def use_fused_attn(experimental: bool = False) -> bool:
    if experimental:
        return _USE_FUSED_ATTN > 1
    return _USE_FUSED_ATTN > 0


def report():
    return (_USE_FUSED_ATTN, _USE_REENTRANT_CKPT, _PID, backend(), HAS_EXT, ext_name(),
            _describe() if 'TIMM_FUSED_ATTN' in os.environ else None)
'''


def statement(text: str, first_line: str) -> str:
    """Oracle: the top-level statement of `text` starting with `first_line`, up to the next blank line."""
    start = text.index(first_line)
    end = text.find("\n\n", start)
    return text[start:end if end >= 0 else len(text)].rstrip("\n")


def run_module(code: str, call: str, tmp_path, env_extra: dict) -> str:
    """Run `code` as a module file in a fresh interpreter, print repr(call); return stdout (raises on failure)."""
    path = tmp_path / f"m{abs(hash((code, call)))}.py"
    path.write_text(code + f"\nprint(repr({call}))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMM_")}
    env.update(env_extra)
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def timm_closure(qualname: str):
    return extract_closure(RepoIndex({"timm/layers/config.py": TIMM_CONFIG}), "timm/layers/config.py", qualname)


def test_guarded_assignment_keeps_its_guard():
    result = timm_closure("use_fused_attn")
    assert result.self_contained and result.unresolved == [] and result.conflicts == []
    guard = statement(TIMM_CONFIG, "if 'TIMM_FUSED_ATTN'")
    assert guard in result.code
    # never an unguarded copy of the guarded line (it raised KeyError without the variable)
    assert "\n_USE_FUSED_ATTN = int(" not in result.code and result.code.count("int(os.environ") == 1
    # all definitions in file order, and what the whole statement reads (_SOURCE in the helper) is there too
    assert result.code.index("_USE_FUSED_ATTN = 0") < result.code.index(guard)
    assert "_SOURCE = 'environment'" in result.code
    assert coarse_unbound_names(result.code) == set()


@pytest.mark.parametrize("env", [{}, {"TIMM_FUSED_ATTN": "2", "TIMM_REENTRANT_CKPT": "1"}])
def test_generated_module_behaves_as_the_original(env, tmp_path):
    result = timm_closure("report")
    assert result.self_contained, result.reasons
    expected = run_module(TIMM_CONFIG, "report()", tmp_path, env)
    assert run_module(result.code, "report()", tmp_path, env) == expected
    assert run_module(timm_closure("use_fused_attn").code, "use_fused_attn(True)", tmp_path, env) == \
        run_module(TIMM_CONFIG, "use_fused_attn(True)", tmp_path, env)


def test_if_else_try_and_with_statements_come_whole():
    result = timm_closure("report")
    for first_line in ["if 'TIMM_REENTRANT_CKPT'", "with warnings.catch_warnings()", "if hasattr(os, 'getpid')",
                       "try:\n    import not_an_installed"]:
        whole = statement(TIMM_CONFIG, first_line)
        assert result.code.count(whole) == 1, first_line
    # each statement once: nothing lifted out of a block besides the block itself
    for line in ["_PID = os.getpid() > 0", "return 'slow'", "HAS_EXT = False", "_USE_REENTRANT_CKPT = False"]:
        assert result.code.count(line) == 1, line
    assert result.conflicts == []  # rebinding a name in its own file is not a conflict between files


def test_type_checking_imports_stay_under_their_guard(tmp_path):
    files = {
        "pkg/__init__.py": "",
        "pkg/big.py": "import sqlalchemy\n\n\nclass Big(sqlalchemy.Table):\n    pass\n",
        "pkg/ops.py": ("from __future__ import annotations\n\nfrom typing import TYPE_CHECKING\n\n"
                       "if TYPE_CHECKING:\n    from .big import Big\n\n\n"
                       "def width(b: Big) -> int:\n    return 3\n"),
    }
    result = extract_closure(RepoIndex(files), "pkg/ops.py", "width")
    assert result.self_contained and result.unresolved == []
    assert "if TYPE_CHECKING:\n    from .big import Big" in result.code
    assert "class Big" not in result.code and "sqlalchemy" not in result.code  # the guarded import is not followed
    assert run_module(result.code, "width(None)", tmp_path, {}) == "3\n"


def test_a_kernel_inside_a_guard_is_lifted_with_its_block_neighbours():
    text = ("import triton\nimport triton.language as tl\n\nHAS = True\n"
            "if HAS:\n    BLOCK = 16\n\n    @triton.jit\n    def helper(x):\n        return x * BLOCK\n\n"
            "    @triton.jit\n    def kernel(x):\n        return helper(x)\n\n"
            "    @triton.jit\n    def other(x):\n        return x\n")
    result = extract_closure(RepoIndex({"k.py": text}), "k.py", "kernel")
    assert result.self_contained and result.unresolved == []
    assert result.code.count("def kernel(") == 1 and "def other(" not in result.code and "if HAS:" not in result.code
    assert "BLOCK = 16" in result.code and "@triton.jit\ndef helper(x):\n    return x * BLOCK" in result.code


def test_a_guard_with_a_repository_import_is_split_on_its_main_path():
    # `from .fast import f` cannot run in a standalone module: its definition is copied instead (main path)
    files = {
        "p/__init__.py": "",
        "p/fast.py": "def f(x):\n    return x + 1\n",
        "p/user.py": ("try:\n    from .fast import f\n    FAST = True\nexcept ImportError:\n    f = None\n    FAST = False\n\n"
                      "def g(x):\n    return f(x) if FAST else x\n"),
    }
    result = extract_closure(RepoIndex(files), "p/user.py", "g")
    assert result.self_contained and result.unresolved == []
    assert "def f(x):\n    return x + 1" in result.code and "FAST = True" in result.code
    assert "from .fast" not in result.code and "f = None" not in result.code


def test_earlier_definitions_come_first_whichever_name_brings_the_block(tmp_path):
    # ABOUT (sorted first) brings the `if` block; LEVEL's first plain assignment must still precede it, or the
    # copy would end with LEVEL = 0 whatever the environment says
    text = ("import os\n\nLEVEL = 0\nif 'GUARD_LEVEL' in os.environ:\n    LEVEL = int(os.environ['GUARD_LEVEL'])\n\n"
            "    def ABOUT():\n        return 'env'\nelse:\n    def ABOUT():\n        return 'default'\n\n\n"
            "def f():\n    return ABOUT(), LEVEL\n")
    result = extract_closure(RepoIndex({"g.py": text}), "g.py", "f")
    assert result.self_contained and result.code.index("LEVEL = 0") < result.code.index("if 'GUARD_LEVEL'")
    for env in [{}, {"GUARD_LEVEL": "3"}]:
        assert run_module(result.code, "f()", tmp_path, env) == run_module(text, "f()", tmp_path, env)


def test_a_guard_that_reads_a_name_it_also_binds_gets_the_earlier_binding(tmp_path):
    # torch/_inductor/runtime/triton_compat.py: `try: import triton` / `except ImportError: triton = None`, then
    # `if triton is not None: import triton.language as tl ...` / `else: ... triton = stand-in`; a kernel that
    # reads KIND from the if block needs the earlier binding of `triton` (here the try block's import line,
    # which a guarded import with a stand-in reduces to) before the if block
    compat = ("try:\n    import json as triton\nexcept ImportError:\n    triton = None\n\n"
              "if triton is not None:\n    import json as tl\n    KIND = 'real'\nelse:\n    class triton:\n        pass\n"
              "    tl = None\n    KIND = 'stand-in'\n")
    user = "from .compat import tl, KIND\n\n\ndef k():\n    return tl.__name__, KIND\n"
    result = extract_closure(RepoIndex({"p/__init__.py": "", "p/compat.py": compat, "p/user.py": user}), "p/user.py", "k")
    assert result.self_contained and result.unresolved == []
    assert result.code.index("import json as triton") < result.code.index("if triton is not None:")
    assert run_module(result.code, "k()", tmp_path, {}) == "('json', 'real')\n"


def test_a_main_guard_is_copied_only_for_names_nothing_else_binds():
    # `if __name__ == "__main__":` never runs when the module is imported: a rebinding or an append there does
    # not change what the kernel sees, and its harness (external imports, benchmarks) stays out
    text = ("import triton\n\nBLOCK = 64\nCONFIGS = [1]\n\n\n@triton.jit\ndef k(x):\n    return x + BLOCK + len(CONFIGS) + ONLY_MAIN\n\n\n"
            "if __name__ == '__main__':\n    import matplotlib\n    BLOCK = 128\n    CONFIGS.append(2)\n    ONLY_MAIN = 1\n")
    result = extract_closure(RepoIndex({"s.py": text}), "s.py", "k")
    main = text[text.index("if __name__"):].rstrip("\n")
    assert result.code.count(main) == 1  # ONLY_MAIN is bound nowhere else: the block comes, once, as it is
    without = text.replace("ONLY_MAIN = 1", "pass").replace(" + ONLY_MAIN", "")
    result = extract_closure(RepoIndex({"s.py": without}), "s.py", "k")
    assert result.self_contained and "__main__" not in result.code and "matplotlib" not in result.code
    assert "BLOCK = 64" in result.code and "CONFIGS = [1]" in result.code
