"""Constructor and input inference of --suite modules, one small module per rule, run by the REAL worker on CPU
without torch.compile (--backend none), all in one suite run. Each module can only be built and called the way
its rule finds, so the oracle is the module itself: it raises for anything else. The expected values (sizes,
paths, dtypes) follow from how each module is written, not from the inference code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from suite_helpers import run_modules

HEADER = "import dataclasses\nimport enum\nimport torch\nfrom torch import nn\n"

MODULES = {
    # --- constructor
    "typed": '''
class Typed(nn.Module):
    def __init__(self, dim: int, scale: float, causal: bool, mode: str):
        super().__init__()
        assert type(dim) is int and type(scale) is float and type(causal) is bool and mode == "fast"
        self.proj = nn.Linear(dim, dim)
    def forward(self, x):
        return self.proj(x)
''',
    "defaults": '''
class Defaults(nn.Module):
    def __init__(self, width=24, depth=None):
        super().__init__()
        self.proj = nn.Linear(width, width)
    def forward(self, x):
        return self.proj(x)
''',
    "divisible": '''
class QuantLinear(nn.Module):
    def __init__(self, infeatures, outfeatures):
        super().__init__()
        if infeatures % 128 != 0:
            raise ValueError(f"infeatures must be divisible by 128, got {infeatures}")
        self.w = nn.Parameter(torch.randn(outfeatures, infeatures))
    def forward(self, x):
        return x @ self.w.t()
''',
    "relation": '''
class Halves(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        assert in_features == 2 * out_features
        self.fc = nn.Linear(in_features, out_features)
    def forward(self, x):
        return self.fc(x)
''',
    "tensor_arg": '''
class FromWeight(nn.Module):
    def __init__(self, weight):
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())
    def forward(self, x):
        return x @ self.weight
''',
    "dtype_arg": '''
class Head(nn.Module):
    def __init__(self, hidden, vocab, param_dtype):
        super().__init__()
        self.w = nn.Parameter(torch.empty(vocab, hidden, dtype=param_dtype).normal_())
    def forward(self, x):
        return x @ self.w.t()
''',
    "config": '''
class FromConfig(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.fc = nn.Linear(config.hidden_size, config.intermediate_size)
    def forward(self, x):
        return self.fc(x)
''',
    "config_class": '''
@dataclasses.dataclass
class Args:
    dim: int = -1
    n_layers: int = 12

class WithArgs(nn.Module):
    def __init__(self, args: Args):
        super().__init__()
        assert args.n_layers == 2, "a small model"
        self.layers = nn.ModuleList(nn.Linear(args.dim, args.dim) for _ in range(args.n_layers))
    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x
''',
    "choices": '''
class Activated(nn.Module):
    def __init__(self, dim, kind):
        super().__init__()
        if kind == "swish":
            self.act = nn.SiLU()
        elif kind == "mish":
            self.act = nn.Mish()
        else:
            raise ValueError(f"unknown activation {kind}")
        self.fc = nn.Linear(dim, dim)
    def forward(self, x):
        return self.act(self.fc(x))
''',
    "layer_arg": '''
class Wrapper(nn.Module):
    def __init__(self, dim, mixer_cls):
        super().__init__()
        self.mixer = mixer_cls(dim)
        self.fc = nn.Linear(dim, dim)
    def forward(self, x):
        return self.mixer(self.fc(x))
''',
    "list_arg": '''
class Stack(nn.Module):
    def __init__(self, dims):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x
''',
    "enum_arg": '''
class Kind(enum.Enum):
    SUM = "sum"
    MAX = "max"

class Pool(nn.Module):
    def __init__(self, kind: Kind):
        super().__init__()
        self.kind = Kind(kind)
    def forward(self, x):
        return x.sum(-1) if self.kind is Kind.SUM else x.amax(-1)
''',
    "future_dataclass": '''
@dataclasses.dataclass
class Settings:
    eps: "float" = 1e-5

class Normed(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.settings = Settings()
        self.norm = nn.LayerNorm(dim, eps=self.settings.eps)
    def forward(self, x):
        return self.norm(x)
''',
    "provided": '''
class Either(nn.Module):
    def __init__(self, dim, left=None, right=None):
        super().__init__()
        if left is None and right is None:
            raise ValueError("either left or right must be provided")
        self.fc = nn.Linear(dim, dim)
    def forward(self, x):
        return self.fc(x)
''',
    "as_list": '''
class Split(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        if not isinstance(out_features, list):
            raise TypeError("this layer requires out_features to be a list")
        self.heads = nn.ModuleList(nn.Linear(in_features, n) for n in out_features)
    def forward(self, x):
        return torch.cat([head(x) for head in self.heads], -1)
''',
    "pass_through": '''
class Mixed(nn.Module):
    def __init__(self, dim, mixer_cls):
        super().__init__()
        self.mixer = mixer_cls(dim)
        self.fc = nn.Linear(dim, dim)
    def forward(self, x):
        return self.mixer(self.fc(x), inference_params=None)
''',
    "size_table": '''
KERNELS = {16: "small", 32: "large"}

class Tabled(nn.Module):
    def __init__(self, num_heads):
        super().__init__()
        self.kernel = KERNELS[num_heads]
    def forward(self, x):
        return x * 2
''',
    "config_value": '''
class Configured(nn.Module):
    def __init__(self, config):
        super().__init__()
        if config.normalization != "RMSNorm":
            raise ValueError(f"requires config.normalization='RMSNorm'; got {config.normalization}")
        self.weight = nn.Parameter(torch.ones(config.hidden_size))
    def forward(self, x):
        return x * self.weight
''',
    "layer_list": '''
class Stacked(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.blocks = nn.ModuleList()
        self.blocks.extend(blocks)
    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x
''',
    "axis": '''
class Softmaxed(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim
    def forward(self, x):
        return torch.softmax(x, self.dim)
''',
    "device_string": '''
class Placed(nn.Module):
    def __init__(self, dim, placement: str):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, device=placement))
    def forward(self, x):
        return x * self.weight
''',
    # --- inputs
    "expected_size": '''
class Sized(nn.Module):
    def forward(self, x):
        if x.shape[-1] != 256:
            raise AssertionError(f"Input size mismatch: Expected input size 256, but got {x.shape[-1]}")
        return x + 1
''',
    "labels": '''
class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 10)
    def forward(self, x, labels):
        return nn.functional.cross_entropy(self.fc(x), labels)
''',
    "rank4": '''
class Spatial(nn.Module):
    def forward(self, x):
        b, c, h, w = x.shape
        return x.mean((2, 3))
''',
    "conv1d": '''
class Temporal(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(7, 8, 3)
    def forward(self, x):
        return self.conv(x)
''',
    "pair": '''
class PairSum(nn.Module):
    def forward(self, pair):
        a, b = pair
        return a + b
''',
    "batch_dict": '''
class Masked(nn.Module):
    def forward(self, batch):
        return batch["image"] * batch["mask"]
''',
    "token_ids": '''
class Embed(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(37, 8)
    def forward(self, input_ids):
        assert input_ids.dtype == torch.long and int(input_ids.max()) < 37
        return self.emb(input_ids)
''',
    "optional_mask": '''
class Attend(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 64)
    def forward(self, x, attn_mask):
        y = self.fc(x)
        return y if attn_mask is None else y.masked_fill(attn_mask, 0)
''',
    "docstring": '''
class Described(nn.Module):
    def forward(self, x):
        """x: (B, C, H, W), images"""
        assert x.dim() == 4 and x.shape[2] == x.shape[3], "square images"
        return x.flip(-1)
''',
    "features": '''
class Features(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(37, 5)
    def forward(self, x):
        return self.fc(x)
''',
    "attribute_size": '''
class Checked(nn.Module):
    def __init__(self):
        super().__init__()
        self.width = 48
    def forward(self, x):
        assert x.shape[-1] == self.width
        return x * 2
''',
    "half": '''
class HalfOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
    def forward(self, x):
        if x.dtype != torch.bfloat16:
            raise TypeError("this kernel only supports bf16 inputs")
        return x * self.scale
''',
    "length_arg": '''
class Positions(nn.Module):
    def forward(self, n):
        return torch.arange(n).float()
''',
    "forward_choice": '''
class Impl(nn.Module):
    def __init__(self, dim, impl):
        super().__init__()
        self.impl = impl
        self.fc = nn.Linear(dim, dim)
    def forward(self, x):
        if self.impl.upper() != self.impl or len(self.impl) != 3:  # no string to read statically
            raise ValueError(f"Unknown impl {self.impl!r}. Available implementations: ['FA3', 'FA4']")
        return self.fc(x)
''',
    "own_train": '''
class OwnTrain(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
    def train(self):  # not nn.Module.train(mode): model.eval() and model.train(False) call it with a mode
        raise RuntimeError("the suite must not call a scraped train()")
    def forward(self, x):
        return self.fc(x)
''',
    "instance_for_class": '''
class Frozen(nn.Module):
    def __init__(self, base_layer):
        super().__init__()
        self.base_layer = base_layer
        for p in base_layer.parameters():
            p.requires_grad_(False)
    def forward(self, x):
        return self.base_layer(x)
''',
    "namespace_tensor": '''
def project(x, weight):
    return x @ weight.T


class Packed(nn.Module):
    def __init__(self, packed):
        super().__init__()
        self.packed = packed
        self.device = packed.device
    def forward(self, x):
        return project(x, self.packed)
''',
    "vector_scales": '''
class Scaled(nn.Module):
    def __init__(self, weight, scales):
        super().__init__()
        self.weight = weight
        self.scales = scales
    def forward(self, x):
        return (x @ self.weight.T) / self.scales.view(1, -1)
''',
    "index_statement": '''
class Gather(nn.Module):
    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(256, 8))
        self.proj = nn.Linear(16, 8)
    def forward(self, x, where):
        rows = self.table[
            where
        ]
        return self.proj(x) + rows.sum()
''',
    "own_shape": '''
def rotate(x, freqs):
    freqs = freqs.view(1, x.size(1), 1, x.size(3))
    return x * freqs


class Rotary(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(32, 32)
    def forward(self, x, freqs):
        b, s, _ = x.shape
        return rotate(self.proj(x).view(b, s, 4, 8), freqs)
''',
    "hook_arg": '''
import typing


class Hooked(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
    def forward(self, x, score_mod: typing.Callable[[torch.Tensor], torch.Tensor]):
        y = self.fc(x)
        return y if score_mod is None else score_mod(y)
''',
    "hint_objects": '''
class Hinted(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
    def forward(self, x: torch.Tensor):
        assert Hinted.forward.__annotations__["x"] is torch.Tensor  # as when the module is imported
        return self.fc(x)
''',
    "batch_cache": '''
class Cached(nn.Module):
    def __init__(self, bsz, dim):
        super().__init__()
        self.register_buffer("cache", torch.zeros(bsz, dim))
        self.fc = nn.Linear(dim, dim)
    def forward(self, x):
        return self.fc(x) + self.cache.unsqueeze(1)
''',
    "ids_view": '''
class Slots(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("slots", torch.zeros(2, 8))
    def forward(self, x, batch_idx):
        b, s, d = x.shape
        rows = self.slots[batch_idx.view(b, 1)]
        return x + rows.sum()
''',
    "process_group": '''
import torch.distributed as dist


class SequenceParallel(nn.Module):
    def __init__(self, attn_func):
        super().__init__()
        self.attn_func = attn_func
        self.proj = nn.Linear(16, 16)
    def forward(self, x):
        world = dist.get_world_size()  # ValueError: Default process group has not been initialized ...
        out = torch.empty_like(x)
        dist.all_to_all_single(out, x.contiguous())  # one rank: out is x
        # a callable: found by rebuilding the model once the process group is up (a new search, same process)
        return self.proj(self.attn_func(out)) * world
''',
    "cache_setup": '''
class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(16, 16)
        self.cache = None
    def setup_caches(self, max_batch_size, max_seq_length, dtype=torch.float32):
        self.cache = torch.zeros(max_batch_size, max_seq_length, 16, dtype=dtype)
    def forward(self, x, input_pos=None):
        assert self.cache is not None, "Caches must be initialized first"
        b, s, _ = x.shape
        return self.proj(x) + self.cache[:b, input_pos]  # None: a new axis, and the sum does not broadcast
''',
    "optional_fallback": '''
try:
    import surely_not_installed_profiler as profiler
except ImportError:
    profiler = None


class Fallback(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
    def forward(self, x):
        if profiler is None:  # falls back: runs here
            return self.fc(x)
        with profiler.annotate("fc"):
            return self.fc(x)
''',
    "optional_needed": '''
try:
    import surely_not_installed_profiler
except ImportError:
    pass


class Profiled(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
    def forward(self, x):
        with surely_not_installed_profiler.annotate("fc"):  # NameError here: needs the package
            return self.fc(x)
''',
    "data_file": '''
class PNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 10, 3)
        self.conv.weight.data = torch.load("./pnet.pt")  # a data file: the archive's, never the worker's
    def forward(self, x):
        return self.conv(x)
''',
}


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> dict:
    """One suite run over every module above (persistent workers), its manifest by name."""
    base = tmp_path_factory.mktemp("infer")
    return run_modules(base, MODULES, "--timeout", "300", header=HEADER).rows


def ok(rows: dict, name: str) -> dict:
    row = rows[name]
    assert row["status"] == "ok", (row.get("phase"), row.get("error"), row.get("inference"))
    return row


SKIPPED = {"optional_needed", "data_file"}  # modules the suite must skip, not run


@pytest.mark.parametrize("name", sorted(set(MODULES) - SKIPPED))
def test_every_module_builds_and_runs(rows, name):
    ok(rows, name)


def test_constructor_values_follow_type_hints(rows):
    row = ok(rows, "typed")
    assert row["init_kwargs"] == {"dim": "64", "scale": "1.0", "causal": "False", "mode": "'fast'"}
    assert row["inference"]["init"] == "signature"


def test_defaults_are_kept(rows):
    row = ok(rows, "defaults")
    assert row["init_kwargs"] == {} and row["inference"]["init"] == "defaults"
    assert row["input_shapes"][0][-1] == 24  # Linear(24, 24): the model's own size


def test_divisibility_the_error_names(rows):
    row = ok(rows, "divisible")
    assert int(row["init_kwargs"]["infeatures"]) % 128 == 0
    assert row["input_shapes"][0][-1] == int(row["init_kwargs"]["infeatures"])


def test_relation_between_sizes(rows):
    row = ok(rows, "relation")
    assert int(row["init_kwargs"]["in_features"]) == 2 * int(row["init_kwargs"]["out_features"])


def test_tensor_where_a_tensor_is_expected(rows):
    assert ok(rows, "tensor_arg")["init_kwargs"]["weight"].startswith("torch.rand(")


def test_dtype_where_a_dtype_is_expected(rows):
    assert ok(rows, "dtype_arg")["init_kwargs"]["param_dtype"] == "DTYPE"


def test_config_object_with_what_the_module_reads(rows):
    value = ok(rows, "config")["init_kwargs"]["config"]
    assert value.startswith("types.SimpleNamespace(") and "hidden_size=" in value and "intermediate_size=" in value


def test_config_class_of_the_module(rows):
    assert ok(rows, "config_class")["init_kwargs"]["args"] == "Args(dim=64, n_layers=2)"


def test_string_choices_from_the_source(rows):
    assert ok(rows, "choices")["init_kwargs"]["kind"] in ("'swish'", "'mish'")


def test_layer_where_a_layer_is_called(rows):
    assert ok(rows, "layer_arg")["init_kwargs"]["mixer_cls"].startswith("torch.nn.")


def test_list_where_an_int_is_not_iterable(rows):
    assert ok(rows, "list_arg")["init_kwargs"]["dims"].startswith("[")


def test_enum_member(rows):
    assert ok(rows, "enum_arg")["init_kwargs"]["kind"] == "Kind.SUM"


def test_value_for_a_parameter_the_error_says_is_missing(rows):
    assert "left" in ok(rows, "provided")["init_kwargs"]


def test_kind_the_error_names(rows):
    assert ok(rows, "as_list")["init_kwargs"]["out_features"].startswith("[")


def test_layer_taking_any_arguments(rows):
    row = ok(rows, "pass_through")
    assert row["init_kwargs"]["mixer_cls"].startswith("lambda *args, **kwargs:")


def test_config_attribute_the_error_names(rows):
    assert "normalization='RMSNorm'" in ok(rows, "config_value")["init_kwargs"]["config"]


def test_list_of_layers_where_one_is_not_iterable(rows):
    assert ok(rows, "layer_list")["init_kwargs"]["blocks"] == "[torch.nn.Identity(), torch.nn.Identity()]"


def test_axis_where_a_size_was_given(rows):
    assert ok(rows, "axis")["init_kwargs"]["dim"] == "-1"


def test_device_where_a_string_is_not_one(rows):
    assert ok(rows, "device_string")["init_kwargs"]["placement"] == "device"


def test_other_size_for_a_missing_table_entry(rows):
    assert ok(rows, "size_table")["init_kwargs"]["num_heads"] in ("16", "32")


def test_size_an_error_expects(rows):
    assert ok(rows, "expected_size")["input_shapes"][0][-1] == 256


def test_labels_one_per_row_within_the_classes(rows):
    row = ok(rows, "labels")
    assert row["input_shapes"] == [[2, 16]]
    assert row["inputs"]["args"][1] == "torch.randint(0, 2, (2,), device=device, dtype=torch.long)"


def test_rank_four_from_unpacking_the_shape(rows):
    assert len(ok(rows, "rank4")["input_shapes"][0]) == 4


def test_convolution_rank_and_channels(rows):
    shape = ok(rows, "conv1d")["input_shapes"][0]
    assert len(shape) == 3 and shape[1] == 7
    assert rows["conv1d"]["inference"]["inputs"] == "model"


def test_tuple_and_dict_inputs(rows):
    assert ok(rows, "pair")["inputs"]["args"][0].startswith("(torch.rand(")
    batch = ok(rows, "batch_dict")["inputs"]["args"][0]
    assert batch.startswith("{") and "'image'" in batch and "'mask'" in batch


def test_token_ids_below_the_vocabulary(rows):
    assert "torch.randint(0, 37," in ok(rows, "token_ids")["inputs"]["args"][0]


def test_optional_mask_is_none(rows):
    assert ok(rows, "optional_mask")["inputs"]["args"][1] == "None"


def test_docstring_shapes(rows):
    row = ok(rows, "docstring")
    assert row["inference"]["inputs"] == "docstring" and len(row["input_shapes"][0]) == 4


def test_features_from_the_first_layer(rows):
    assert ok(rows, "features")["input_shapes"][0][-1] == 37


def test_size_from_the_failing_assertion(rows):
    assert ok(rows, "attribute_size")["input_shapes"][0][-1] == 48


def test_half_precision(rows):
    row = ok(rows, "half")
    assert row["module_dtype"] == "bfloat16"
    assert "DTYPE = torch.bfloat16" in (row["_root"] / row["program"]).read_text()


def test_number_where_forward_wants_one(rows):
    assert ok(rows, "length_arg")["inputs"]["args"] == ["64"]


def test_forward_error_repairs_the_constructor(rows):
    assert ok(rows, "forward_choice")["init_kwargs"]["impl"] in ("'FA3'", "'FA4'")


def test_own_train_method_is_not_called(rows):
    row = ok(rows, "own_train")
    program = (row["_root"] / row["program"]).read_text()
    assert ".train(TRAINING)" not in program and "module.training = TRAINING" in program


def test_layer_instance_where_a_method_is_called_on_it(rows):
    assert ok(rows, "instance_for_class")["init_kwargs"]["base_layer"] == "torch.nn.Identity()"


def test_tensor_where_a_config_object_meets_a_tensor_attribute(rows):
    assert ok(rows, "namespace_tensor")["init_kwargs"]["packed"].startswith("torch.rand((64, 64)")


def test_vector_where_a_tensor_argument_is_flattened(rows):
    assert ok(rows, "vector_scales")["init_kwargs"]["scales"] == "torch.rand((64,), device=device, dtype=DTYPE)"


def test_integer_index_named_on_another_line_of_the_statement(rows):
    args = ok(rows, "index_statement")["inputs"]["args"]
    assert args[0].startswith("torch.rand(") and args[1].startswith("torch.randint(")


def test_own_shape_for_a_tensor_a_helper_views(rows):
    row = ok(rows, "own_shape")
    assert row["inputs"]["args"][1] == "torch.rand((1, 64, 1, 8), device=device, dtype=DTYPE)"
    assert row["input_shapes"] == [[2, 64, 32], [1, 64, 1, 8]]


def test_function_argument_is_none_first(rows):
    assert ok(rows, "hook_arg")["inputs"]["args"][1] == "None"


def test_type_hints_are_objects_as_when_imported(rows):
    ok(rows, "hint_objects")


def test_batch_size_of_the_constructor_is_the_inputs(rows):
    row = ok(rows, "batch_cache")
    assert row["init_kwargs"]["bsz"] == "2" and row["input_shapes"][0][0] == 2


def test_ids_of_their_own_shape_where_forward_views_them(rows):
    assert ok(rows, "ids_view")["inputs"]["args"][1] == "torch.randint(0, 2, (2, 1), device=device, dtype=torch.long)"


def test_programs_rebuild_what_was_inferred(rows):
    """Each program, run alone in a fresh interpreter, builds the model and calls it as the worker did."""
    for name in ("typed", "config_class", "batch_dict", "half", "enum_arg", "pass_through", "labels", "own_train",
                 "own_shape"):
        program = rows[name]["_root"] / ok(rows, name)["program"]
        ran = subprocess.run([sys.executable, str(program)], capture_output=True, text=True, timeout=120,
                             cwd=program.parent)
        assert ran.returncode == 0 and ran.stdout.strip() == "Tensor", (name, ran.stderr[-2000:])


def run_program(row: dict) -> str:
    """The module's program run on its own in a fresh interpreter (build() on CPU, then forward): its output."""
    script = ("import importlib.util, sys\n"
              "spec = importlib.util.spec_from_file_location('program', sys.argv[1])\n"
              "program = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(program)\n"
              "model, args, kwargs = program.build('cpu')\nprint(tuple(model(*args, **kwargs).shape))\n")
    done = subprocess.run([sys.executable, "-c", script, str(row["_root"] / row["program"])], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_one_rank_process_group_where_forward_calls_collectives(rows):
    row = ok(rows, "process_group")
    assert row["inputs"]["prepare"] == ["single_process_group()"]
    program = (row["_root"] / row["program"]).read_text()
    assert "def single_process_group():" in program and "    single_process_group()\n" in program
    assert run_program(row).endswith(", 16)")  # the program alone sets its process group up


def test_the_models_own_cache_set_up_where_forward_asks_for_it(rows):
    row = ok(rows, "cache_setup")
    assert row["inputs"]["prepare"] == [
        "with torch.device(device): model.setup_caches(max_batch_size=2, max_seq_length=256)"]
    assert "def single_process_group" not in (row["_root"] / row["program"]).read_text()
    assert row["inputs"]["kwargs"] == {"input_pos": "torch.arange(64, device=device)"}
    assert run_program(row).endswith(", 16)")


def test_failing_for_want_of_an_optional_import_is_a_skip(rows):
    ok(rows, "optional_fallback")  # the same try-import, with a fallback the module takes: it runs
    row = rows["optional_needed"]
    assert row["status"] == "skipped" and row["skip_reason"] == "missing package surely_not_installed_profiler"
    assert row["error"].startswith("NameError: name 'surely_not_installed_profiler' is not defined")


def test_a_data_file_the_module_opens_is_a_skip_not_a_failure(rows):
    row = rows["data_file"]
    assert row["status"] == "skipped" and row["skip_reason"] == "missing data file pnet.pt"
    assert row["error"].startswith("FileNotFoundError: ")
    stats = json.loads((row["_root"] / "suite" / "stats.json").read_text())["counts"]
    assert stats["models_skipped_missing_data_file_pnet_pt"] == 1 and "errors_init" not in stats
