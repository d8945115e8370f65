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

import re
import string
from pathlib import Path
from typing import Any, Optional

DTYPES = ("float32", "bfloat16", "float16")
TEMPLATES = Path(__file__).resolve().parent / "templates"  # timm.py, huggingface.py, torchbench.py: real programs
_SETTINGS = re.compile(r"^# --- set by the suite .*?^# --- end of the suite's settings ---\n", re.M | re.S)
_SETTING = re.compile(r"^(?P<name>[A-Z_]+) = (?P<value>[^#\n]*?)(?P<comment>  #[^\n]*)?$", re.M)

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

# The first two lines of what the suite appends to a scraped module's source: `module_source` cuts there.
from scraper.suiterun import FOOTER_MARKER, module_source  # noqa: E402,F401  (one home: the contract)

_MODULE_FOOTER = '''

''' + FOOTER_MARKER + '''{class_name} ({mode}, {dtype}).
# Constructor arguments and inputs were inferred (scraper/worker/infer): {how}.
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


def render(template: str, words: dict, settings: dict[str, Any]) -> str:
    """A program from templates/<template>.py: `${word}`s of its docstring filled from `words`, and each line of
    its settings block (`NAME = default`) given the value in `settings` (repr, except DTYPE: `torch.<name>`);
    the block's marker lines go. Everything else is the template as written."""
    text = (TEMPLATES / f"{template}.py").read_text(encoding="utf-8")
    end = text.index('"""', 3) + 3
    text = string.Template(text[:end]).safe_substitute(words) + text[end:]
    block = _SETTINGS.search(text)
    lines = [line for line in block.group(0).splitlines(keepends=True) if not line.startswith("# ---")]
    rendered = _SETTING.sub(lambda m: setting_line(m, settings), "".join(lines))
    return text[: block.start()] + rendered + text[block.end():]


def setting_line(match: re.Match, settings: dict[str, Any]) -> str:
    """One `NAME = value  # comment` line of a settings block with the suite's value (KeyError: none given)."""
    name, value = match["name"], settings[match["name"]]
    text = f"torch.{value}" if name == "DTYPE" else repr(value)
    return f"{name} = {text}{match['comment'] or ''}"


def timm_program(name: str, batch_size: int, dtype: str, training: bool, file: str = "program.py") -> str:
    """The standalone script that builds timm model `name` (templates/timm.py)."""
    words = {"name": name, "mode": _mode(training), "dtype": dtype, "file": file}
    return render("timm", words, {"MODEL": name, "BATCH_SIZE": batch_size, "DTYPE": dtype, "TRAINING": training})


def huggingface_program(
    name: str, batch_size: int, dtype: str, training: bool, seq_len: int, max_layers: int, file: str = "program.py"
) -> str:
    """The standalone script that builds transformers class `name` from its config (templates/huggingface.py)."""
    words = {"name": name, "mode": _mode(training), "dtype": dtype, "max_layers": max_layers, "file": file}
    return render("huggingface", words, {"MODEL": name, "BATCH_SIZE": batch_size, "SEQ_LEN": seq_len,
                                         "MAX_LAYERS": max_layers, "DTYPE": dtype, "TRAINING": training})


def torchbench_program(name: str, batch_size: Optional[int], dtype: str, training: bool, checkout: str,
                       random_weights: bool = False, inference_grad: bool = False, file: str = "program.py") -> str:
    """The standalone script that builds TorchBench model `name` through the checkout at `checkout` (the
    default of its --torchbench-dir); `batch_size` None keeps the model's own default (templates/torchbench.py)."""
    note = ("\nPretrained checkpoints are not fetched either: RANDOM_WEIGHTS keeps the random initialization."
            if random_weights else "")
    test = "train" if training else "eval"
    words = {"name": name, "mode": _mode(training), "dtype": dtype, "file": file, "weights_note": note, "test": test}
    return render("torchbench", words, {
        "MODEL": name, "TEST": test, "BATCH_SIZE": batch_size, "DTYPE": dtype, "TRAINING": training,
        "INFERENCE_GRAD": inference_grad, "RANDOM_WEIGHTS": random_weights, "TORCHBENCH_DIR": str(checkout)})


def module_program(source: str, class_name: str, init_args: list, init_kwargs: dict, input_args: list,
                   input_kwargs: dict, dtype: str, training: bool, how: str = "", prepare=()) -> str:
    """A scraped module's source followed by the `build()` the worker inferred for `class_name`: the
    constructor's and forward's arguments as Python expressions (they may use `torch`, `types`, `device`,
    `DTYPE` and the module's names), and the statements to run once the model is built (`prepare`, naming it
    `model`: scraper.worker.infer.setup), with the helpers they call; `how` says where they came from."""
    from scraper.worker.infer.setup import helpers_for

    init = ", ".join([*init_args, *(f"{name}={value}" for name, value in init_kwargs.items())])
    footer = _MODULE_FOOTER.format(
        helpers=helpers_for(prepare), prepare="".join(f"    {statement}\n" for statement in prepare),
        class_name=class_name, init=init, args="".join(f"{value}, " for value in input_args).rstrip(" "),
        kwargs=", ".join(f"{name!r}: {value}" for name, value in input_kwargs.items()), dtype=dtype,
        training=training, mode=_mode(training), how=how or "by trial",
    )
    return source.rstrip("\n") + "\n" + footer + _MAIN


def _mode(training: bool) -> str:
    return "training" if training else "inference"

