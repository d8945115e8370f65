"""The repair table of --suite modules' inference (scraper/worker/infer/repairs.py), row by row, on small
hand-written modules, in this process (no suite run: scraper.worker.infer.program.search, as the worker calls
it). Each module builds and runs only with the value its repair finds: it raises for the guesses before the repair
(the oracle is the module). Where a failure is one torch operation's, the test checks the inputs the repair
makes with that operation itself: the same forward that failed runs on them."""

from __future__ import annotations

import sys
import time
import types

import pytest
import torch

from scraper.phases import PhaseError
from scraper.worker.infer import program, repairs
from scraper.worker.infer.errors import failure_of
from scraper.worker.infer.inputs import InputSearch, Trial, forward_params
from scraper.worker.infer.source import SourceFacts

HEADER = "import numpy as np\nimport torch\nfrom torch import nn\nimport torch.nn.functional as F\n"


@pytest.fixture
def load(tmp_path):
    """load(code, class_name) -> (cls, namespace, source, filename): the module's closure written to a file and
    executed as the worker does (the failing lines are read from that file)."""
    def loaded(code: str, class_name: str):
        path = tmp_path / f"{class_name}.py"
        path.write_text(HEADER + code, encoding="utf-8")
        namespace = program.exec_source(path.read_text(encoding="utf-8"), str(path))
        return namespace[class_name], namespace, path.read_text(encoding="utf-8"), str(path)
    yield loaded
    sys.modules.pop(program.MODULE_NAME, None)


@pytest.fixture
def searched(load):
    """searched(code, class_name) -> the manifest fields of the constructor call and inputs that worked."""
    def run(code: str, class_name: str) -> dict:
        cls, namespace, source, filename = load(code, class_name)
        found = program.search(cls, namespace, SourceFacts(source, class_name), [], filename, "cpu", torch.float32)
        return found["fields"]
    return run


def skip_reason(searched, code: str, class_name: str):
    """The skip reason of a module whose search fails (None when it fails without one)."""
    with pytest.raises(PhaseError) as raised:
        searched(code, class_name)
    return raised.value.details.get("skip_reason")


# ------------------------------------------------------------------------------------------ constructor


def test_a_linear_where_the_module_reads_in_features_of_the_layer_it_was_given(searched):
    fields = searched('''
class LoRA(nn.Module):
    def __init__(self, layer, rank):
        super().__init__()
        self.layer = layer
        self.down = nn.Linear(layer.in_features, rank, bias=False)
        self.up = nn.Linear(rank, layer.out_features, bias=False)
    def forward(self, x):
        return self.layer(x) + self.up(self.down(x))
''', "LoRA")
    assert fields["init_kwargs"]["layer"] == "torch.nn.Linear(64, 64)"
    assert fields["input_shapes"][0][-1] == 64


def test_the_modules_own_block_class_where_it_reads_block_expansion(searched):
    fields = searched('''
class BasicBlock(nn.Module):
    expansion = 2
    def __init__(self, inplanes, planes):
        super().__init__()
        self.conv = nn.Conv2d(inplanes, planes * self.expansion, 3, padding=1)
    def forward(self, x):
        return torch.relu(self.conv(x))

class ResNet(nn.Module):
    def __init__(self, block, layers):
        super().__init__()
        self.inplanes = 8
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        stages = []
        for planes in (8, 16)[:len(layers)]:
            stages.append(block(self.inplanes, planes))
            self.inplanes = planes * block.expansion
        self.stages = nn.Sequential(*stages)
    def forward(self, x):
        return self.stages(self.stem(x))
''', "ResNet")
    assert fields["init_kwargs"]["block"] == "BasicBlock"
    assert fields["input_shapes"][0][1] == 3


def test_a_layer_of_the_hinted_kind_at_once(searched):
    fields = searched('''
class Tied(nn.Module):
    def __init__(self, embedding: nn.Embedding):
        super().__init__()
        self.embedding = embedding
    def forward(self, x):
        return x @ self.embedding.weight.t()
''', "Tied")
    assert fields["init_kwargs"]["embedding"] == "torch.nn.Embedding(128, 64)"
    assert fields["inference"]["init_trials"] == 1  # no repair needed


def test_a_value_an_assertion_lists(searched):
    fields = searched('''
class Quant(nn.Module):
    def __init__(self, dim, n_bits):
        super().__init__()
        assert n_bits in (3, 5), "3 or 5 bits only"
        self.scale = nn.Parameter(torch.ones(dim) / (2 ** n_bits))
    def forward(self, x):
        return x * self.scale
''', "Quant")
    assert fields["init_kwargs"]["n_bits"] == "3"


def test_a_list_where_an_assertion_wants_one(searched):
    fields = searched('''
class Pyramid(nn.Module):
    def __init__(self, dims):
        super().__init__()
        assert isinstance(dims, (list, tuple))
        self.layers = nn.ModuleList(nn.Linear(d, d) for d in dims)
    def forward(self, x):
        return sum(layer(x) for layer in self.layers)
''', "Pyramid")
    assert fields["init_kwargs"]["dims"] == "[64, 64]"


def test_a_list_where_the_module_looks_a_value_up_in_it(searched):
    fields = searched('''
class Kernels(nn.Module):
    def __init__(self, kernel_sizes):
        super().__init__()
        self.small = 3 in kernel_sizes
        self.convs = nn.ModuleList(nn.Conv1d(4, 4, 1) for _ in kernel_sizes)
    def forward(self, x):
        return sum(conv(x) for conv in self.convs)
''', "Kernels")
    assert fields["init_kwargs"]["kernel_sizes"] == "[64, 64]"


def test_an_integer_where_a_float_factor_makes_a_size(searched):
    fields = searched('''
class PatchMerging(nn.Module):
    def __init__(self, dim, downscaling_factor):
        super().__init__()
        self.factor = downscaling_factor
        self.proj = nn.Linear(dim * downscaling_factor ** 2, dim)
    def forward(self, x):
        return self.proj(x)
''', "PatchMerging")
    assert fields["init_kwargs"]["downscaling_factor"] == "1"


def test_a_parameter_where_the_module_ties_the_tensor_it_was_given_to_a_layer(searched):
    fields = searched('''
class Head(nn.Module):
    def __init__(self, embedding_weights):
        super().__init__()
        rows, features = embedding_weights.shape
        self.decoder = nn.Linear(features, rows, bias=False)
        self.decoder.weight = embedding_weights  # tied
    def forward(self, hidden_state):
        return self.decoder(hidden_state)
''', "Head")
    weights = "torch.rand((64, 64), device=device, dtype=DTYPE)"
    assert fields["init_kwargs"]["embedding_weights"] == f"torch.nn.Parameter({weights})"


def test_a_probability_where_a_dropout_got_a_size(searched):
    fields = searched('''
class Dropped(nn.Module):
    def __init__(self, dim, dropouts):
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropouts[0])
    def forward(self, x):
        return self.drop(self.fc(x))
''', "Dropped")
    assert fields["init_kwargs"]["dropouts"] == "[0.1, 0.1]"


def test_a_number_where_a_list_was_given_for_a_size(searched):
    fields = searched('''
class Width(nn.Module):
    def __init__(self, q: list):  # a name no rule knows (else the name's own guess would do)
        super().__init__()
        self.fc = nn.Linear(q, 8)  # the hint is wrong: one width
    def forward(self, x):
        return self.fc(x)
''', "Width")
    assert fields["init_kwargs"]["q"] == "16"


def test_an_activation_that_takes_inplace(searched):
    fields = searched('''
class Block(nn.Module):
    def __init__(self, dim, act_layer):
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.act = act_layer(inplace=True)
    def forward(self, x):
        return self.act(self.fc(x))
''', "Block")
    assert fields["init_kwargs"]["act_layer"] == "torch.nn.ReLU"


def test_the_parameter_a_helper_iterates_is_the_one_passed_on_to_it(searched):
    """pytorch-fm's models: `MultiLayerPerceptron(input_dim, embed_dims, dropout)` called with `mlp_dims` and a
    dropout read from a list; the helper's `for embed_dim in embed_dims:` names the model's other parameter
    `embed_dim`, which must stay a number."""
    fields = searched('''
class MLP(nn.Module):
    def __init__(self, input_dim, embed_dims, dropout):
        super().__init__()
        layers = []
        for embed_dim in embed_dims:
            layers += [nn.Linear(input_dim, embed_dim), nn.Dropout(p=dropout)]
            input_dim = embed_dim
        self.mlp = nn.Sequential(*layers)
    def forward(self, x):
        return self.mlp(x)

class WideDeep(nn.Module):
    def __init__(self, field_dims, embed_dim, mlp_dims, dropouts):
        super().__init__()
        self.embedding = nn.Embedding(sum(field_dims), embed_dim)
        self.mlp = MLP(embed_dim, mlp_dims, dropouts[0])
    def forward(self, x):
        return self.mlp(self.embedding(x).sum(1))
''', "WideDeep")
    kwargs = fields["init_kwargs"]
    assert kwargs["embed_dim"] == "64" and kwargs["mlp_dims"].startswith("[") and kwargs["field_dims"].startswith("[")


# ------------------------------------------------------------------------------------------ inputs


def test_a_number_where_forward_makes_a_condition_of_a_parameter(searched):
    fields = searched('''
class Stepped(nn.Module):
    def __init__(self):
        super().__init__()
        self.max_step = 4
        self.norms = nn.ModuleList(nn.LayerNorm(8) for _ in range(4))
    def forward(self, x, start):
        out = []
        for t, x_t in enumerate(x.unbind(1)):
            step = t + start
            if t + start >= self.max_step:
                step = self.max_step - 1
            out.append(self.norms[step](x_t))
        return torch.stack(out, 1)
''', "Stepped")
    assert fields["inputs"]["args"][1] == "0"
    assert fields["input_shapes"][0][-1] == 8


def test_a_tensor_where_forward_reads_a_tensor_of_a_bool_it_was_given(searched):
    fields = searched('''
class Gated(nn.Module):
    def forward(self, x, gate: bool):
        assert gate.numel() == x.numel(), "a gate per element, in spite of the hint"
        return x * gate
''', "Gated")
    assert fields["inputs"]["args"][1].startswith("torch.rand(")


def test_larger_images_where_a_deep_encoder_pools_them_away(searched):
    fields = searched('''
class Deep(nn.Module):
    def __init__(self):
        super().__init__()
        self.stages = nn.Sequential(*[nn.Sequential(nn.Conv2d(3 if i == 0 else 8, 8, 3, padding=1), nn.MaxPool2d(2))
                                      for i in range(7)])
    def forward(self, x):
        return self.stages(x)
''', "Deep")
    assert min(fields["input_shapes"][0][2:]) >= 128


def test_one_length_per_sequence_where_forward_packs_the_batch(searched):
    fields = searched('''
class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(16, 16, batch_first=True)
    def forward(self, padded_input, input_lengths):
        packed = nn.utils.rnn.pack_padded_sequence(padded_input, input_lengths, batch_first=True)
        output, _ = self.rnn(packed)
        return nn.utils.rnn.pad_packed_sequence(output, batch_first=True)[0]
''', "Encoder")
    batch, length, _ = fields["input_shapes"][0]
    assert fields["inputs"]["args"][1] == f"torch.full(({batch},), {length}, device=device, dtype=torch.long)"


def test_a_tuple_where_forward_concatenates_a_parameter(searched):
    fields = searched('''
class Fuse(nn.Module):
    def forward(self, feats):
        return torch.cat(feats, dim=1) * 2
''', "Fuse")
    assert fields["inputs"]["args"][0].startswith("(torch.rand(")


def test_a_mask_of_its_own_shape_where_forward_multiplies_by_it(searched):
    fields = searched('''
class Masked(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(8, 8, 3, padding=1)
    def forward(self, x, x_mask):
        return self.conv(x * x_mask) * x_mask
''', "Masked")
    batch, channels, length = fields["input_shapes"][0]
    assert fields["inputs"]["args"][1] == f"torch.ones(({batch}, 1, {length}), device=device, dtype=torch.bool)"


def test_floats_where_forward_computes_with_what_looked_like_ids(searched):
    fields = searched('''
class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 3)
    def forward(self, y, y_hat):
        return self.conv(y), self.conv(y_hat)
''', "Discriminator")
    assert fields["inputs"]["args"][0].startswith("torch.rand(")


def test_a_function_where_forward_calls_a_parameter(searched):
    fields = searched('''
class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(64)
    def forward(self, x, sublayer):
        return x + sublayer(self.norm(x))
''', "Residual")
    assert fields["inputs"]["args"][1] == "lambda x, *args, **kwargs: x"


# The failures below are one torch operation's: each test makes the failure with its trial, asks the table for the
# repair and runs the same forward on what the repair gives.


@pytest.fixture
def repaired(load):
    """repaired(code, class_name, layout) -> (args, kwargs) the table's first repair of forward's failure on the
    trial of `layout` gives, evaluated; after checking that the trial did fail."""
    def repair(code: str, class_name: str, layout: tuple):
        cls, namespace, source, filename = load(code, class_name)
        model = cls()
        env = {**namespace, "torch": torch, "types": types, "device": "cpu", "DTYPE": torch.float32}
        evaluate = lambda expression: eval(expression, env)  # noqa: E731,S307 - the trial's own expressions
        facts = SourceFacts(source, class_name)
        search = InputSearch(model, facts, filename, None, None, time.monotonic() + 60, repairs.INPUTS)
        trial = Trial(layout, tuple(forward_params(model, facts, 128)), "test")
        args, kwargs = trial.expressions()
        with pytest.raises(Exception) as raised:
            model(*map(evaluate, args), **{k: evaluate(v) for k, v in kwargs.items()})
        fixed = search.repair(trial, failure_of(raised.value, filename))
        assert fixed is not None, f"no repair for {raised.value!r}"
        args, kwargs = fixed.expressions()
        return model, [evaluate(a) for a in args], {k: evaluate(v) for k, v in kwargs.items()}
    return repair


def test_the_rank_a_concatenation_wants(repaired):
    model, args, kwargs = repaired('''
class WithToken(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("token", torch.zeros(1, 8))
    def forward(self, x):
        return torch.cat([self.token.expand(x.shape[0], 8), x], dim=1)
''', "WithToken", (2, 64, 64))
    assert args[0].dim() == 2
    model(*args, **kwargs)


def test_lengths_where_forward_packs_a_batch_with_a_parameter_of_another_name(repaired):
    model, args, kwargs = repaired('''
class Packed(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(16, 16, batch_first=True)
    def forward(self, x, counts):
        packed = nn.utils.rnn.pack_padded_sequence(x, counts, batch_first=True)
        return nn.utils.rnn.pad_packed_sequence(self.rnn(packed)[0], batch_first=True)[0]
''', "Packed", (2, 64, 16))
    assert args[1].tolist() == [64, 64]
    model(*args, **kwargs)


def test_a_matrix_where_forward_multiplies_its_input_as_one(repaired):
    model, args, kwargs = repaired('''
class Graph(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(64, 8))
    def forward(self, x):
        return torch.mm(x, self.weight)
''', "Graph", (2, 64, 64))
    model(*args, **kwargs)


def test_fewer_dimensions_where_forward_repeats_its_input_into_fewer(repaired):
    model, args, kwargs = repaired('''
class Masker(nn.Module):
    def forward(self, x):
        return (x > 0).unsqueeze(1).repeat(1, x.size(1), 1).float()
''', "Masker", (2, 64, 64))
    model(*args, **kwargs)


def test_targets_of_the_inputs_shape_where_a_loss_wants_them(repaired):
    model, args, kwargs = repaired('''
class Loss(nn.Module):
    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target)
''', "Loss", (2, 64, 64))
    assert args[1].shape == args[0].shape and args[1].is_floating_point()
    model(*args, **kwargs)


# ------------------------------------------------------------------------------------------ data files


def test_a_data_file_the_constructor_opens_is_a_skip(searched):
    assert skip_reason(searched, '''
class PNet(nn.Module):
    def __init__(self):
        super().__init__()
        weights = np.load("./pnet.npy", allow_pickle=True)
        self.conv = nn.Conv2d(3, 10, 3)
        self.conv.weight.data = torch.from_numpy(weights)
    def forward(self, x):
        return self.conv(x)
''', "PNet") == "missing data file pnet.npy"


def test_a_data_file_forward_opens_is_a_skip(searched):
    assert skip_reason(searched, '''
class Normalized(nn.Module):
    def forward(self, x):
        stats = torch.load("checkpoints/stats.pt")
        return (x - stats["mean"]) / stats["std"]
''', "Normalized") == "missing data file stats.pt"


def test_a_data_file_read_on_import_is_a_skip(tmp_path):
    path = tmp_path / "vocab_module.py"
    path.write_text(HEADER + '''
VOCAB = open("data/vocab.txt").read().split()

class Embed(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(len(VOCAB), 8)
    def forward(self, ids):
        return self.emb(ids)
''', encoding="utf-8")
    args = types.SimpleNamespace(source=str(path), class_name="Embed", hints=[], dtype="float32")
    try:
        with pytest.raises(PhaseError) as raised:
            program.module_program(args, "cpu", False)
    finally:
        sys.modules.pop(program.MODULE_NAME, None)
    assert raised.value.phase == "import" and raised.value.details == {"skip_reason": "missing data file vocab.txt"}


def test_a_file_error_other_than_a_missing_file_is_no_skip(searched):
    assert skip_reason(searched, '''
class Misread(nn.Module):
    def forward(self, x):
        open(".").read()  # IsADirectoryError: the module's own mistake, not a file it lacks
        return x
''', "Misread") is None
