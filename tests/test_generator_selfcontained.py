"""`self_contained` never says yes wrongly (issue #15): module objects read through attribute chains, namespace
packages, external packages named like a file of the repository, guarded re-imports, configs read from data
files. Each repository is written by hand; where it matters the real interpreter is the oracle (the module is
run in a subprocess with TRITON_INTERPRET=1)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from scraper.generator.closure import RepoIndex, extract_closure
from scraper.generator.selfcheck import check_module
from tests.generator_helpers import coarse_unbound_names

KERNEL_HEAD = "import triton\nimport triton.language as tl\n"


def run_module(tmp_path, code: str, tail: str = "", name: str = "generated.py"):
    """Run `code` (+ `tail`) as a file in a fresh interpreter with TRITON_INTERPRET=1."""
    path = tmp_path / name
    path.write_text(code + tail)
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env, timeout=120,
                          cwd=tmp_path)


def test_attribute_chain_on_a_rebuilt_module_object_is_not_self_contained(tmp_path):
    # `language` is rebuilt as a module object with the attributes read on it; `math` is a submodule of the
    # package, which the rebuilt object does not have: `language.math.twice` fails with AttributeError
    files = {
        "lib/__init__.py": "",
        "lib/language/__init__.py": "def one(x):\n    return x\n",
        "lib/language/math.py": "def twice(x):\n    return x * 2\n",
        "lib/k.py": "def k(x):\n    return language.one(x) + language.math.twice(x)\n\n\nfrom lib import language\n",
    }
    result = extract_closure(RepoIndex(files), "lib/k.py", "k")
    assert not result.self_contained and result.reasons == {"language.math": "module_object"}
    done = run_module(tmp_path, result.code, "\nprint(k(3))\n")
    assert done.returncode != 0 and "AttributeError" in done.stderr


def test_selfcheck_follows_attributes_of_module_objects():
    code = ("import types\n\n\ndef one(x):\n    return x\n\n\nlanguage = types.ModuleType('language')\n"
            "language.one = one\n\n\ndef k(x):\n    return language.one(x) + language.math.exp(x)\n")
    check = check_module(code)
    assert check.missing == ["language.math"] and not check.self_contained
    assert check_module(code.replace(" + language.math.exp(x)", "")).self_contained


def test_namespace_package_without_init(tmp_path):
    files = {  # `_triton/` has no __init__.py: a namespace package
        "pkg/__init__.py": "",
        "pkg/ops/__init__.py": "",
        "pkg/ops/_triton/arch_info.py": "BLOCK = 32\n\n\ndef warps():\n    return 4\n",
        "pkg/ops/k.py": (KERNEL_HEAD + "from ._triton import arch_info\nfrom ._triton.arch_info import warps\n\n\n"
                         "@triton.jit\ndef k(X, N: tl.constexpr):\n    i = tl.arange(0, N)\n"
                         "    tl.store(X + i, tl.load(X + i) + arch_info.BLOCK)\n\n\n"
                         "def launch(x):\n    k[(1,)](x, N=x.numel(), num_warps=warps())\n    return x\n"),
    }
    index = RepoIndex(files)
    result = extract_closure(index, "pkg/ops/k.py", "k")
    assert result.self_contained and result.unresolved == []
    assert "BLOCK = 32" in result.code and "arch_info.BLOCK = BLOCK" in result.code
    launcher = extract_closure(index, "pkg/ops/k.py", "launch")
    assert launcher.self_contained and "def warps():\n    return 4" in launcher.code
    done = run_module(tmp_path, launcher.code, "\nimport torch\nprint(launch(torch.zeros(8)).tolist())\n")
    assert done.returncode == 0 and done.stdout.strip() == str([32.0] * 8), done.stderr


def test_an_external_package_is_not_a_file_of_the_same_name_inside_a_package():
    files = {
        "pkg/__init__.py": "",
        "pkg/iris.py": "def put(x):\n    return x\n",  # pkg.iris, never `iris`
        "pkg/k.py": KERNEL_HEAD + "import iris\n\n\n@triton.jit\ndef k(x):\n    return iris.put(x)\n",
        "scripts/iris.py": "def put(x):\n    return x\n",  # a script folder: `import iris` there is this file
        "scripts/run.py": KERNEL_HEAD + "import iris\n\n\n@triton.jit\ndef k(x):\n    return iris.put(x)\n",
    }
    index = RepoIndex(files)
    external = extract_closure(index, "pkg/k.py", "k")
    assert external.reasons == {"iris": "external:iris"} and not external.self_contained
    sibling = extract_closure(index, "scripts/run.py", "k")
    assert sibling.self_contained and "def put(x):\n    return x" in sibling.code


# an 8-line helper in a file whose guarded block re-imports triton.language (with stand-ins when Triton is
# missing) and defines 200 lines of other kernels: only the import line is needed
GUARDED = (KERNEL_HEAD + "\n\n@triton.jit\ndef helper(x):\n    y = x * 2\n    return tl.where(y > 0, y, 0)\n\n\n"
           "try:\n    import triton\n    import triton.language as tl\n    HAS_TRITON = True\n"
           + "".join(f"\n    @triton.jit\n    def other_{i}(x):\n        return x + {i}\n" for i in range(50))
           + "except ImportError:\n    HAS_TRITON = False\n    tl = None\n")


def test_a_guarded_reimport_is_not_copied_whole(tmp_path):
    result = extract_closure(RepoIndex({"h.py": GUARDED}), "h.py", "helper")
    assert result.self_contained and result.unresolved == []
    assert "other_" not in result.code and "HAS_TRITON" not in result.code
    assert result.code.count("\n") < 15 and result.imports == ["import triton", "import triton.language as tl"]
    assert coarse_unbound_names(result.code) == set()
    done = run_module(tmp_path, result.code, "\nprint(type(helper).__name__)\n")
    assert done.returncode == 0 and done.stdout.strip() in ("JITFunction", "InterpretedFunction"), done.stderr


def test_a_fallback_between_two_imports_stays_whole():
    text = (KERNEL_HEAD + "try:\n    from triton.language.extra import libdevice\nexcept ImportError:\n"
            "    from triton.language import math as libdevice\n\n\n@triton.jit\ndef k(x):\n    return libdevice.exp(x)\n")
    result = extract_closure(RepoIndex({"m.py": text}), "m.py", "k")
    assert result.self_contained and text[text.index("try:"):text.index("\n\n\n@triton")] in result.code


CONFIG_LOADER = textwrap.dedent('''\
    import json
    import os

    import triton

    CONFIG_PATH = os.path.join(os.path.dirname(__file__), "tune_configs.json")
    with open(CONFIG_PATH) as handle:
        TUNED = json.load(handle)


    def get_tuned_config(op):
        return [triton.Config(c) for c in TUNED[op]]
    ''')
OPS = (KERNEL_HEAD + "from pkg.runtime import get_tuned_config\n\n\n"
       "@triton.autotune(configs=get_tuned_config('add'), key=['N'])\n@triton.jit\n"
       "def add_kernel(X, N, BLOCK: tl.constexpr):\n    i = tl.arange(0, BLOCK)\n    tl.store(X + i, tl.load(X + i) + 1)\n")


def test_configs_read_from_a_data_file_of_the_repository(tmp_path):
    # the original runs where its data file is; the generated module, written elsewhere, cannot find it
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "__init__.py").write_text("")
    (repo / "pkg" / "runtime.py").write_text(CONFIG_LOADER)
    (repo / "pkg" / "tune_configs.json").write_text('{"add": [{"BLOCK": 16}]}')
    (repo / "pkg" / "ops.py").write_text(OPS)
    original = subprocess.run([sys.executable, "-c", "import pkg.ops; print(pkg.ops.add_kernel.configs[0])"],
                              capture_output=True, text=True, cwd=repo, env={**os.environ, "TRITON_INTERPRET": "1"})
    assert original.returncode == 0 and "BLOCK: 16" in original.stdout, original.stderr
    result = extract_closure(RepoIndex({p: (repo / p).read_text() for p in ["pkg/__init__.py", "pkg/runtime.py", "pkg/ops.py"]}),
                             "pkg/ops.py", "add_kernel")
    assert not result.self_contained and result.reasons == {"__file__": "data_file:tune_configs.json"}
    done = run_module(tmp_path, result.code)
    assert done.returncode != 0 and "tune_configs.json" in done.stderr


def test_a_name_a_function_declares_global_comes_with_its_module_binding(tmp_path):
    # unsloth's fp8.py: a decorator factory reads and sets a module-level cache through `global`; the cache's
    # module-level `= None` must be copied, or applying the decorator fails with NameError on import
    text = textwrap.dedent('''\
        _library = None


        def registered(name):
            def decorator(fn):
                global _library
                if _library is None:
                    _library = {}
                _library[name] = fn
                return fn
            return decorator


        @registered("launch")
        def launch(x):
            return x
        ''')
    result = extract_closure(RepoIndex({"fp8.py": text}), "fp8.py", "launch")
    assert result.self_contained and "_library = None" in result.code
    done = run_module(tmp_path, result.code, "\nprint(launch(3), sorted(_library))\n")
    assert done.returncode == 0 and done.stdout.strip() == "3 ['launch']", done.stderr
    without = result.code.replace("_library = None\n", "")
    assert "_library" in check_module(without).missing  # a `global` declaration binds nothing at module level
