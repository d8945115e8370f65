"""The PyTorch program of each model: a standalone script that builds it, written before it is compiled.

The worker writes this script and then builds the model BY RUNNING IT (its `build(device)`), so the script a
user gets is exactly what was compiled, not a description of it. Each script needs only torch and the suite's
library (timm or transformers); a `modules` program is the scraped module's own source (its dependency closure)
followed by a `build()` that holds the constructor arguments and input shapes the worker inferred.

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

# The first two lines of what the suite appends to a scraped module's source: `module_source` cuts there.
FOOTER_MARKER = "# " + "-" * 105 + "\n# Added by run_inductor_suite.py: how the suite built and called "

_MODULE_FOOTER = '''

''' + FOOTER_MARKER + '''{class_name} ({mode}, {dtype}).
# Constructor arguments and input shapes were inferred by trial, paritybench-style.
import torch  # noqa: E402

INIT_ARGS = {init_args!r}
INIT_KWARGS = {init_kwargs!r}
INPUT_SHAPES = {input_shapes!r}
DTYPE = torch.{dtype}
TRAINING = {training!r}


def build(device="cuda"):
    """{class_name} with random weights and random inputs of the inferred shapes, on `device`."""
    torch.manual_seed(0)
    model = {class_name}(*INIT_ARGS, **INIT_KWARGS).to(device=device, dtype=DTYPE).train(TRAINING)
    args = tuple(torch.rand(shape, device=device, dtype=DTYPE) for shape in INPUT_SHAPES)
    return model, args, {{}}
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


def module_program(
    source: str, class_name: str, init_args: list, init_kwargs: dict, input_shapes: list,
    dtype: str, training: bool,
) -> str:
    """A scraped module's source followed by the `build()` the worker inferred for `class_name`."""
    footer = _MODULE_FOOTER.format(
        class_name=class_name, init_args=list(init_args), init_kwargs=dict(init_kwargs),
        input_shapes=[list(shape) for shape in input_shapes], dtype=dtype, training=training,
        mode=_mode(training),
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

