"""Static dependency closure (scraper.generator.closure) and the self-contained check (selfcheck)."""

from __future__ import annotations

import ast

import pytest

from scraper.generator.closure import RepoIndex, extract_closure
from scraper.generator.selfcheck import check_module
from tests.generator_helpers import FIXTURE_REPO, coarse_unbound_names, make_zipball


@pytest.fixture(scope="module")
def index():
    return RepoIndex.from_location(FIXTURE_REPO)


def original(relative: str, name: str) -> str:
    """Oracle: the stdlib's ast.get_source_segment of top-level `name` in a fixture file (decorators included)."""
    text = (FIXTURE_REPO / relative).read_text()
    lines = text.splitlines(keepends=True)
    for node in ast.parse(text).body:
        targets = [getattr(t, "id", None) for t in getattr(node, "targets", [getattr(node, "target", None)])]
        if getattr(node, "name", None) == name or name in targets:
            start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            return "".join(lines[start - 1:node.end_lineno]).rstrip("\n")
    raise AssertionError(f"{name} not in {relative}")


def assert_self_contained(result):
    assert result.self_contained and result.unresolved == []
    compile(result.code, "<test>", "exec")
    assert coarse_unbound_names(result.code) == set()


def test_cross_file_helpers_through_relative_and_absolute_imports(index):
    result = extract_closure(index, "acme/ops/add.py", "add_kernel")
    assert_self_contained(result)
    for relative, name in [("acme/ops/add.py", "add_kernel"), ("acme/utils.py", "_helper"),
                           ("acme/utils.py", "_twice"), ("acme/utils.py", "SCALE"), ("acme/ops/add.py", "OFFSET")]:
        assert original(relative, name) in result.code
    assert "get_configs" not in result.code and "import torch" not in result.code  # only what it reads
    assert result.imports == ["import triton", "import triton.language as tl"]
    # definition order: a helper before the kernel that calls it
    assert result.code.index("def _twice") < result.code.index("def _helper") < result.code.index("def add_kernel")


def test_autotune_configs_from_a_helper_function(index):
    result = extract_closure(index, "acme/ops/add.py", "scale_kernel")
    assert_self_contained(result)
    for name in ["get_configs", "BLOCK_SIZES", "SCALE", "EPS"]:
        relative = "acme/ops/add.py" if name == "EPS" else "acme/utils.py"
        assert original(relative, name) in result.code
    assert result.code.index("BLOCK_SIZES =") < result.code.index("@triton.autotune")


def test_config_list_filled_by_a_module_level_loop(index):
    result = extract_closure(index, "acme/ops/configs.py", "k_loop_configs")
    assert_self_contained(result)
    text = (FIXTURE_REPO / "acme/ops/configs.py").read_text()
    loop = text[text.index("CONFIGS = []"):text.index("\n\n\n@triton.autotune")]
    assert loop in result.code


def test_star_import_from_the_repository(index):
    result = extract_closure(index, "acme/ops/plain_jit.py", "k_from_import")
    assert_self_contained(result)
    assert original("acme/utils.py", "_twice") in result.code and not any("*" in i for i in result.imports)


def test_unresolved_names_are_reported_with_reasons(index):
    result = extract_closure(index, "acme/ops/external.py", "k_external")
    assert not result.self_contained
    assert result.reasons == {"rearrange": "external:einops", "not_there": "missing_module:.missing_module",
                              "undefined_name": "undefined"}
    assert check_module(result.code).missing == ["not_there", "rearrange", "undefined_name"]


def test_nested_kernels(index):
    method = extract_closure(index, "acme/ops/nested.py", "Ops.k_static_method")
    assert_self_contained(method)
    assert method.dropped_decorators == ["staticmethod"] and "staticmethod" not in method.code
    assert "@triton.jit\ndef k_static_method(x_ptr, BLOCK: tl.constexpr):\n    x = tl.load(" in method.code
    inner = extract_closure(index, "acme/ops/nested.py", "make_kernel.<locals>.k_in_function")
    assert inner.reasons == {"scale": "enclosing_scope"}
    assert "import triton as tt" in inner.code and "LOCAL_BLOCK = 16" in inner.code


def test_any_definition_for_example_an_nn_module(index):
    result = extract_closure(index, "acme/layers.py", "Block")
    assert_self_contained(result)
    for relative, name in [("acme/layers.py", "Block"), ("acme/layers.py", "HIDDEN"), ("acme/ops/add.py", "add"),
                           ("acme/ops/add.py", "add_kernel"), ("acme/utils.py", "_helper")]:
        assert original(relative, name) in result.code
    assert "from torch import nn" in result.imports and "import torch" in result.imports


def test_zip_index_gives_the_same_closure(index, tmp_path):
    from_zip = RepoIndex.from_location(make_zipball(FIXTURE_REPO, tmp_path / "acme__kernels.zip"))
    for path, name in [("acme/ops/add.py", "scale_kernel"), ("acme/layers.py", "Block")]:
        assert extract_closure(from_zip, path, name).code == extract_closure(index, path, name).code


def test_aliases_conflicts_and_module_objects():
    files = {
        "pkg/a.py": "import triton\nBLOCK = 1\nfrom .b import helper as h\nfrom . import b\nimport pkg.b as pb\n"
                    "@triton.jit\ndef k(x):\n    return h(x) + BLOCK\n@triton.jit\ndef m(x):\n    return b.helper(x)\n",
        "pkg/b.py": "import triton\nBLOCK = 2\n@triton.jit\ndef helper(x):\n    return x * BLOCK\n",
        "pkg/__init__.py": "",
    }
    index = RepoIndex(files)
    result = extract_closure(index, "pkg/a.py", "k")
    assert "h = helper" in result.code and result.conflicts == ["BLOCK"]
    module_object = extract_closure(index, "pkg/a.py", "m")  # `from . import b` ... `b.helper(x)`
    assert_self_contained(module_object)
    assert "b = types.ModuleType('b')" in module_object.code and "b.helper = helper" in module_object.code
    assert module_object.code.index("def helper") < module_object.code.index("b.helper = helper") \
        < module_object.code.index("def m")
    files["pkg/c.py"] = "import triton\nimport pkg.b\n@triton.jit\ndef n(x):\n    return pkg.b.helper(x)\n"
    assert extract_closure(RepoIndex(files), "pkg/c.py", "n").reasons == {"pkg": "module_object"}
    with pytest.raises(KeyError):
        extract_closure(index, "pkg/a.py", "nope")
    with pytest.raises(KeyError):
        extract_closure(index, "pkg/zzz.py", "k")


def test_class_whose_base_has_its_own_name():
    """`class Impl(Impl, nn.Module)` reads the Impl imported from another module before rebinding the name."""
    files = {"pkg/__init__.py": "", "pkg/default/__init__.py": "",
             "pkg/base.py": "class Impl:\n    def scale(self):\n        return 2\n",
             "pkg/default/impl.py": "from torch import nn\nfrom ..base import Impl\n\n"
                                    "class Impl(Impl, nn.Module):\n    def forward(self, x):\n"
                                    "        return x * self.scale()\n"}
    result = extract_closure(RepoIndex(files), "pkg/default/impl.py", "Impl")
    assert_self_contained(result)
    namespace = {}
    exec(result.code, namespace)
    assert namespace["Impl"]().forward(3) == 6


def test_a_method_annotated_with_a_module_name_it_shadows():
    """`def device(self) -> device` reads the module's `device` (torch's) before the def binds it in the class:
    detectron2's ImageList, copied without `from torch import device`, failed with a NameError on import. A
    property's `@scale.setter`, read after the class bound `scale`, stays the class's own."""
    files = {"pkg/__init__.py": "",
             "pkg/images.py": "from torch import device, dtype\n\nscale = 3\n\n\nclass Images:\n"
                              "    def __init__(self, tensor):\n        self.tensor = tensor\n\n"
                              "    def device(self) -> device:\n        return self.tensor.device\n\n"
                              "    @property\n    def scale(self):\n        return self._scale\n\n"
                              "    @scale.setter\n    def scale(self, value):\n        self._scale = value\n",
             "pkg/model.py": "from torch import nn\nfrom pkg.images import Images\n\n\nclass Net(nn.Module):\n"
                             "    def forward(self, x):\n        return Images(x).device()\n"}
    result = extract_closure(RepoIndex(files), "pkg/model.py", "Net")
    assert_self_contained(result)
    assert "from torch import device" in result.code
    assert "scale = 3" not in result.code and "dtype" not in result.code  # only what is read early
    namespace = {}
    exec(result.code, namespace)
    import torch
    assert namespace["Net"]().forward(torch.zeros(2)) == torch.device("cpu")


def test_import_cycle_terminates():
    files = {"a.py": "from b import g\nimport triton\n@triton.jit\ndef f(x):\n    return g(x)\n",
             "b.py": "from a import f\nimport triton\n@triton.jit\ndef g(x):\n    return f(x)\n"}
    result = extract_closure(RepoIndex(files), "a.py", "f")
    assert_self_contained(result)
    assert result.code.count("def f(") == 1 and result.code.count("def g(") == 1


def test_selfcheck_scoping():
    code = "import triton\nX = 1\nclass C:\n    q = 1\n    def m(self):\n        return q + X\n" \
           "def f(a):\n    return [z for z in a] + [len(b) for b in W]\n"
    check = check_module(code)
    assert check.compiles and check.missing == ["W", "q"]
    assert not check_module("def f(:\n").compiles


def test_alternatives_stay_alternatives_and_every_binding_is_kept():
    text = ("import triton\n"
            "try:\n    from triton.language.extra import libdevice\nexcept ImportError:\n"
            "    from triton.language import math as libdevice\n"
            "BLOCK = 16\n"
            "if triton.__version__ > '3':\n    BLOCK = 32\n"
            "def _impl(x):\n    return libdevice.exp(x) + BLOCK\n"
            "_impl = triton.jit(_impl)\n")
    result = extract_closure(RepoIndex({"m.py": text}), "m.py", "_impl")
    assert_self_contained(result)
    try_block = text[text.index("try:"):text.index("BLOCK = 16")].rstrip("\n")
    if_block = text[text.index("if triton"):text.index("def _impl")].rstrip("\n")
    assert try_block in result.code and if_block in result.code
    assert result.code.index("BLOCK = 16") < result.code.index("if triton") < result.code.index("def _impl")
    assert result.code.rstrip().endswith("_impl = triton.jit(_impl)")  # the hand-applied decorator follows


def test_an_if_else_with_stand_ins_comes_whole():
    # the shape of torch/_inductor/runtime/triton_compat.py: real imports on the main path, stand-ins in `else`;
    # copied whole, the guard keeps choosing at run time (tl is the real module where triton imports)
    compat = ("try:\n    import triton\nexcept ImportError:\n    triton = None\n"
              "if triton is not None:\n    import triton.language as tl\n    def helper():\n        return 1\n"
              "else:\n    class tl:\n        constexpr = None\n    def helper():\n        return 0\n    ONLY_ELSE = 2\n")
    user = ("from .compat import tl, triton, helper, ONLY_ELSE\n"
            "@triton.jit\ndef k(x, B: tl.constexpr):\n    return helper() + ONLY_ELSE\n")
    result = extract_closure(RepoIndex({"p/compat.py": compat, "p/user.py": user, "p/__init__.py": ""}), "p/user.py", "k")
    assert_self_contained(result)
    guard = compat[compat.index("if triton is not None"):].rstrip("\n")
    assert result.code.count(guard) == 1 and result.code.count("class tl") == 1 and result.conflicts == []
    # `triton` comes from `try: import triton` / `except ImportError: triton = None`: a guarded import of an
    # allowed library with a stand-in comes as its import line alone (the kernel needs Triton anyway)
    assert "import triton" in result.imports and "triton = None" not in result.code
    assert result.code.index(guard) < result.code.index("@triton.jit\ndef k(")


def test_kernel_wrapped_by_a_call_under_another_name(index):
    result = extract_closure(index, "acme/ops/spellings.py", "raw_body")
    assert_self_contained(result)
    assert result.code.rstrip().endswith("k_wrapped = tr.jit(raw_body)")


def test_unresolvable_project_decorator_is_left_out_and_listed():
    files = {
        "fg/__init__.py": "",
        "fg/utils.py": "import sqlalchemy\n\ndef libentry():\n    return sqlalchemy.wrap\n",
        "fg/ops.py": "import triton\nfrom fg.utils import libentry\n\n@libentry()\n@triton.autotune(configs=[], key=[])\n"
                     "@triton.jit\ndef k(x):\n    pass\n",
    }
    index = RepoIndex(files)
    result = extract_closure(index, "fg/ops.py", "k")
    assert_self_contained(result)
    assert result.dropped_decorators == ["libentry()"]
    assert "libentry" not in result.code and "@triton.autotune(configs=[], key=[])\n@triton.jit\ndef k(x):" in result.code
    kept = extract_closure(index, "fg/ops.py", "k", drop_unresolvable_decorators=False)
    assert kept.reasons == {"sqlalchemy": "external:sqlalchemy"} and kept.dropped_decorators == []
    assert kept.code.count("@libentry()") == 1


def test_one_module_object_for_two_importers():
    files = {
        "q/__init__.py": "",
        "q/h.py": "import triton\n@triton.jit\ndef f(x):\n    return x\n@triton.jit\ndef g(x):\n    return x\n",
        "q/mid.py": "import triton\nfrom q import h\n@triton.jit\ndef mid(x):\n    return h.g(x)\n",
        "q/top.py": "import triton\nfrom q import h\nfrom q.mid import mid\n@triton.jit\ndef k(x):\n    return h.f(mid(x))\n",
    }
    result = extract_closure(RepoIndex(files), "q/top.py", "k")
    assert_self_contained(result)
    assert result.code.count("h = types.ModuleType('h')") == 1 and result.conflicts == []
    assert "h.f = f" in result.code and "h.g = g" in result.code
