"""The PyTorch program of each model: a standalone script that builds it, written before it is compiled.

The worker writes this script and then builds the model BY RUNNING IT (its `build(device)`), so the script a
user gets is exactly what was compiled, not a description of it. Each script needs only torch and the suite's
library (timm or transformers); a `modules` program is the scraped module's own source (its dependency closure)
followed by a `build()` that holds the constructor arguments and input shapes the worker inferred; a
`torchbench` program builds the model through a TorchBench checkout (--torchbench-dir / $TORCHBENCH_DIR) with
TorchBench's own Model API, network access refused while it does.

Every program defines:
    build(device) -> (model, args, kwargs)   # random weights, in eval() or train() mode, on `device`
and runs it when executed (`python prog.py [--compile]`).
"""

from __future__ import annotations

from typing import Optional

DTYPES = ("float32", "bfloat16", "float16")

_MAIN = '''

if __name__ == "__main__":
    import sys

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, args, kwargs = build(device)
    if "--compile" in sys.argv:
        model = torch.compile(model)
    with torch.no_grad():
        output = model(*args, **kwargs)
    print(type(output).__name__)
'''

_TIMM = '''"""{name} from timm with random weights, as compiled by run_inductor_suite.py ({mode}, {dtype}).

Run: python {file}  (eager)  or  python {file} --compile
"""
import torch
import timm

MODEL = {name!r}
BATCH_SIZE = {batch_size!r}
DTYPE = torch.{dtype}
TRAINING = {training!r}


def build(device="cuda"):
    """The model (random weights, nothing downloaded) and one batch of random images, on `device`."""
    torch.manual_seed(0)
    model = timm.create_model(MODEL, pretrained=False)
    input_size = tuple(model.pretrained_cfg.get("input_size", (3, 224, 224)))
    model = model.to(device=device, dtype=DTYPE).train(TRAINING)
    images = torch.randn((BATCH_SIZE, *input_size), device=device, dtype=DTYPE)
    return model, (images,), {{}}
'''

_HUGGINGFACE = '''"""{name} from transformers, built from its config class (random weights, nothing downloaded), as compiled
by run_inductor_suite.py ({mode}, {dtype}; at most {max_layers} layers per stack, 0 = the config's own).

Run: python {file}  (eager)  or  python {file} --compile
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import transformers

MODEL = {name!r}
BATCH_SIZE = {batch_size!r}
SEQ_LEN = {seq_len!r}
MAX_LAYERS = {max_layers!r}
DTYPE = torch.{dtype}
TRAINING = {training!r}
LAYER_KEYS = ("num_hidden_layers", "num_layers", "n_layer", "encoder_layers", "decoder_layers", "num_decoder_layers")


def make_config(model_cls):
    """The config class's defaults, fewer layers, no KV cache, a pad token (batches > 1 need one)."""
    config = model_cls.config_class()
    for key in LAYER_KEYS:
        value = getattr(config, key, None)
        if MAX_LAYERS and isinstance(value, int) and value > MAX_LAYERS:
            setattr(config, key, MAX_LAYERS)
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = 0
    config.use_cache = False
    return config


def make_inputs(model, config, device):
    """Random inputs as PyTorch's benchmarks/dynamo/huggingface.py makes them (labels only when training)."""
    batch = BATCH_SIZE
    if model.main_input_name == "pixel_values":
        size = config.image_size
        return {{"pixel_values": torch.randn(batch, config.num_channels, size, size, device=device, dtype=DTYPE)}}
    limit = getattr(config, "max_position_embeddings", None)  # XLNet says -1: no limit
    seq_len = min(SEQ_LEN, limit) if isinstance(limit, int) and limit > 0 else SEQ_LEN
    # RoBERTa-style embeddings count positions from padding_idx + 1: 512 tokens would index position 513 of 512
    # (a device-side assert on the GPU, an IndexError on the CPU)
    offset = getattr(getattr(getattr(model, "base_model", model), "embeddings", None), "padding_idx", None)
    if isinstance(offset, int) and isinstance(limit, int) and limit > 0:
        seq_len = min(seq_len, limit - offset - 1)
    ids = torch.randint(0, config.vocab_size, (batch, seq_len), device=device)
    if "Bart" in MODEL and config.eos_token_id is not None:
        ids[:, -1] = config.eos_token_id
    inputs = {{"input_ids": ids}}
    if getattr(config, "is_encoder_decoder", False):
        inputs["decoder_input_ids"] = ids
    if TRAINING:
        inputs.update(make_labels(config, batch, seq_len, device))
    return inputs


def make_labels(config, batch, seq_len, device):
    """The loss arguments of the model's head, so that training computes the model's own loss."""
    if MODEL.endswith("QuestionAnswering"):
        return {{key: torch.randint(0, seq_len, (batch,), device=device) for key in ("start_positions", "end_positions")}}
    if MODEL.endswith(("SequenceClassification", "ImageClassification")):
        return {{"labels": torch.randint(0, max(config.num_labels - 1, 1), (batch,), device=device)}}
    if MODEL.endswith(("MaskedLM", "HeadModel", "CausalLM", "ConditionalGeneration")):
        return {{"labels": torch.randint(0, config.vocab_size - 1, (batch, seq_len), device=device)}}
    return {{}}


def build(device="cuda"):
    """The model (random weights) and one batch of random inputs, on `device`."""
    torch.manual_seed(0)
    model_cls = getattr(transformers, MODEL)
    config = make_config(model_cls)
    model = model_cls(config).to(device=device, dtype=DTYPE).train(TRAINING)
    return model, (), make_inputs(model, config, device)
'''

_TORCHBENCH = '''"""{name} from TorchBench (github.com/pytorch/benchmark), built through the checkout's own model API
as PyTorch's benchmarks/dynamo/torchbench.py does, as compiled by run_inductor_suite.py ({mode}, {dtype}):
torchbenchmark.models.{name}.Model(test={test!r}, device=..., batch_size=...).get_module() -> (model, inputs).

Needs a checkout of pytorch/benchmark (its torchbenchmark/ and utils/ folders) and the model's packages:
    python {file} [--torchbench-dir PATH] [--compile]    (default: $TORCHBENCH_DIR, else TORCHBENCH_DIR below)
Nothing is downloaded: while the model is built, network access raises NeedsDownload.{weights_note}
"""
import contextlib
import importlib
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

MODEL = {name!r}
TEST = {test!r}  # TorchBench's test: "eval" (inference) or "train"
BATCH_SIZE = {batch_size!r}  # None: the model's own DEFAULT_EVAL_BSIZE / DEFAULT_TRAIN_BSIZE
DTYPE = torch.{dtype}
TRAINING = {training!r}
INFERENCE_GRAD = {inference_grad!r}  # the forward itself takes gradients (PyTorch's pick_grad)
RANDOM_WEIGHTS = {random_weights!r}  # pretrained checkpoints are not fetched: the random initialization stays
TORCHBENCH_DIR = {checkout!r}  # the checkout it was compiled from
PACKAGES = ("torchbenchmark.models", "torchbenchmark.canary_models", "torchbenchmark.models.fb")

benchmark = None  # TorchBench's BenchmarkModel object, set by build()
blocked = []  # network accesses refused while building (URLs or hosts)
random_weights_used = []  # checkpoints not fetched (their URLs) under RANDOM_WEIGHTS


class NeedsDownload(RuntimeError):
    """Building the model tried to fetch something (weights, a data set, a config) over the network."""


class NotInCheckout(ImportError):
    """The checkout has no model of that name."""


class RandomInit(dict):
    """Stands for a checkpoint that was not fetched: loading it keeps the module's random initialization."""


def checkout_dir(path=None):
    """The checkout: `path`, else $TORCHBENCH_DIR, else TORCHBENCH_DIR."""
    return os.path.abspath(path or os.environ.get("TORCHBENCH_DIR") or TORCHBENCH_DIR)


_OFFLINE = [False]


def _is_local(host):
    return host in (None, "", b"", "localhost", "::1") or str(host).startswith("127.")


def _refuse_network(event, args):
    """Audit hook: while _OFFLINE, any request for a remote host raises NeedsDownload."""
    if not _OFFLINE[0]:
        return
    target = None
    if event == "urllib.Request" and str(args[0]).startswith(("http:", "https:", "ftp:")):
        target = args[0]
    elif event == "socket.getaddrinfo" and not _is_local(args[0]):
        target = args[0]
    elif event == "socket.connect" and isinstance(args[1], tuple) and not _is_local(args[1][0]):
        target = args[1][0]
    if target is not None:
        blocked.append(str(target))
        raise NeedsDownload(f"needs download: {{target}}")


@contextlib.contextmanager
def offline():
    """Refuse network access (torch.hub, urllib, requests and huggingface_hub all pass the audit hook)."""
    if not getattr(offline, "hooked", False):
        sys.addaudithook(_refuse_network)  # hooks stay for the process: _OFFLINE turns it on and off
        offline.hooked = True
    _OFFLINE[0] = True
    try:
        yield
    finally:
        _OFFLINE[0] = False


_LOAD_STATE_DICT = torch.nn.Module.load_state_dict


def _no_checkpoint(url, *args, **kwargs):
    random_weights_used.append(str(url))
    return RandomInit()


def _keep_random(module, state_dict, *args, **kwargs):
    if isinstance(state_dict, RandomInit):
        return torch.nn.modules.module._IncompatibleKeys([], [])
    return _LOAD_STATE_DICT(module, state_dict, *args, **kwargs)


@contextlib.contextmanager
def random_weights():
    """torch.hub / torchvision checkpoints give RandomInit, and loading a RandomInit does nothing."""
    import torch.hub

    patches = [(torch.hub, "load_state_dict_from_url", _no_checkpoint),
               (torch.nn.Module, "load_state_dict", _keep_random)]
    try:
        import torchvision.models._api as torchvision_api  # its WeightsEnum.get_state_dict calls this name
        patches.append((torchvision_api, "load_state_dict_from_url", _no_checkpoint))
    except ImportError:
        pass
    saved = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in patches]
    for owner, attr, replacement in patches:
        setattr(owner, attr, replacement)
    try:
        yield
    finally:
        for owner, attr, original in saved:
            setattr(owner, attr, original)


def import_model(root):
    """TorchBench's module of MODEL in the checkout `root`, looked up as PyTorch's runner does."""
    if root not in sys.path:
        sys.path.insert(0, root)
    os.chdir(root)  # as PyTorch's setup_torchbench_cwd: files a model writes land in the checkout
    for package in PACKAGES:
        wanted = f"{{package}}.{{MODEL}}"
        try:
            return importlib.import_module(wanted)
        except ModuleNotFoundError as exc:
            if not wanted.startswith(exc.name or "?"):  # a package the model imports is missing
                raise
    raise NotInCheckout(f"no model {{MODEL!r}} in the TorchBench checkout {{root}}")


def make_benchmark(model_cls, device):
    """TorchBench's object for MODEL. It gets fp32 (else some models halve themselves on CUDA: their
    DEFAULT_EVAL_CUDA_PRECISION); DTYPE is applied afterwards, as PyTorch's runner casts."""
    batch_size = BATCH_SIZE if getattr(model_cls, "ALLOW_CUSTOMIZE_BSIZE", True) else None
    return model_cls(test=TEST, device=device, batch_size=batch_size, extra_args=["--precision", "fp32"])


def cast(value):
    """Floating-point tensors inside nested tuples/lists/dicts in DTYPE."""
    if isinstance(value, torch.Tensor):
        return value.to(DTYPE) if value.is_floating_point() else value
    if isinstance(value, dict):
        return {{key: cast(item) for key, item in value.items()}}
    if isinstance(value, (list, tuple)):
        return type(value)(cast(item) for item in value)
    return value


def build(device="cuda", torchbench_dir=None):
    """The model and its example inputs on `device`, as (model, args, kwargs): built by TorchBench offline
    (weights as TorchBench initializes them; RANDOM_WEIGHTS: random instead of a checkpoint)."""
    global benchmark
    torch.backends.__allow_nonbracketed_mutation_flag = True  # as PyTorch's runner: models set cudnn flags
    weights = random_weights() if RANDOM_WEIGHTS else contextlib.nullcontext()
    with offline(), weights:
        module = import_model(checkout_dir(torchbench_dir))
        benchmark = make_benchmark(module.Model, device)
        model, inputs = benchmark.get_module()
    if DTYPE != torch.float32:
        model = model.to(dtype=DTYPE)
    model.train(TRAINING)
    inputs = cast(inputs)
    if isinstance(inputs, dict):
        return model, (), inputs
    return model, tuple(inputs), {{}}


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torchbench-dir", help="the TorchBench checkout (default: $TORCHBENCH_DIR, else "
                        "TORCHBENCH_DIR of this file)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model first")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    options = parser.parse_args()
    model, args, kwargs = build(options.device, options.torchbench_dir)
    if options.compile:
        model = torch.compile(model)
    with torch.enable_grad() if TRAINING or INFERENCE_GRAD else torch.no_grad():
        output = model(*args, **kwargs)
    print(type(output).__name__)
'''

# The first two lines of what the suite appends to a scraped module's source: `module_source` cuts there.
FOOTER_MARKER = "# " + "-" * 105 + "\n# Added by run_inductor_suite.py: how the suite built and called "

_MODULE_FOOTER = '''

''' + FOOTER_MARKER + '''{class_name} ({mode}, {dtype}).
# Constructor arguments and inputs were inferred (scraper/suite/infer): {how}.
import types  # noqa: E402

import torch  # noqa: E402

DTYPE = torch.{dtype}
TRAINING = {training!r}
{helpers}

def build(device="cuda"):
    """{class_name} with random weights and the inferred inputs, on `device`."""
    torch.manual_seed(0)
    model = {class_name}({init}).to(device=device, dtype=DTYPE)
    for module in model.modules():  # not model.train(): a scraped class may override it
        module.training = TRAINING
{prepare}    args = ({args})
    kwargs = {{{kwargs}}}
    return model, args, kwargs
'''


def timm_program(name: str, batch_size: int, dtype: str, training: bool, file: str = "program.py") -> str:
    """The standalone script that builds timm model `name`."""
    return _TIMM.format(
        name=name, batch_size=batch_size, dtype=dtype, training=training, mode=_mode(training), file=file
    ) + _MAIN


def huggingface_program(
    name: str, batch_size: int, dtype: str, training: bool, seq_len: int, max_layers: int, file: str = "program.py"
) -> str:
    """The standalone script that builds transformers class `name` from its config."""
    return _HUGGINGFACE.format(
        name=name, batch_size=batch_size, dtype=dtype, training=training, seq_len=seq_len,
        max_layers=max_layers, mode=_mode(training), file=file,
    ) + _MAIN


def torchbench_program(name: str, batch_size: Optional[int], dtype: str, training: bool, checkout: str,
                       random_weights: bool = False, inference_grad: bool = False, file: str = "program.py") -> str:
    """The standalone script that builds TorchBench model `name` through the checkout at `checkout` (the
    default of its --torchbench-dir); `batch_size` None keeps the model's own default."""
    note = ("\nPretrained checkpoints are not fetched either: RANDOM_WEIGHTS keeps the random initialization."
            if random_weights else "")
    return _TORCHBENCH.format(
        name=name, batch_size=batch_size, dtype=dtype, training=training, test="train" if training else "eval",
        checkout=str(checkout), random_weights=random_weights, inference_grad=inference_grad,
        mode=_mode(training), file=file, weights_note=note,
    )


def module_program(source: str, class_name: str, init_args: list, init_kwargs: dict, input_args: list,
                   input_kwargs: dict, dtype: str, training: bool, how: str = "", prepare=()) -> str:
    """A scraped module's source followed by the `build()` the worker inferred for `class_name`: the
    constructor's and forward's arguments as Python expressions (they may use `torch`, `types`, `device`,
    `DTYPE` and the module's names), and the statements to run once the model is built (`prepare`, naming it
    `model`: scraper.suite.infer.setup), with the helpers they call; `how` says where they came from."""
    from scraper.suite.infer.setup import helpers_for

    init = ", ".join([*init_args, *(f"{name}={value}" for name, value in init_kwargs.items())])
    footer = _MODULE_FOOTER.format(
        helpers=helpers_for(prepare), prepare="".join(f"    {statement}\n" for statement in prepare),
        class_name=class_name, init=init, args="".join(f"{value}, " for value in input_args).rstrip(" "),
        kwargs=", ".join(f"{name!r}: {value}" for name, value in input_kwargs.items()), dtype=dtype,
        training=training, mode=_mode(training), how=how or "by trial",
    )
    return source.rstrip("\n") + "\n" + footer + _MAIN


def module_source(program: str) -> Optional[str]:
    """The scraped module's own source (its dependency closure) out of a `module_program` text: everything
    before the suite's footer, ending in one newline; None when the text has no footer (not a modules program)."""
    cut = program.rfind("\n" + FOOTER_MARKER)
    if cut < 0:
        return None
    return program[:cut].rstrip("\n") + "\n"


def _mode(training: bool) -> str:
    return "training" if training else "inference"

