"""${name} from TorchBench (github.com/pytorch/benchmark), built through the checkout's own model API
as PyTorch's benchmarks/dynamo/torchbench.py does, as compiled by run_inductor_suite.py (${mode}, ${dtype}):
torchbenchmark.models.${name}.Model(test='${test}', device=..., batch_size=...).get_module() -> (model, inputs).

Needs a checkout of pytorch/benchmark (its torchbenchmark/ and utils/ folders) and the model's packages:
    python ${file} [--torchbench-dir PATH] [--compile]    (default: $TORCHBENCH_DIR, else TORCHBENCH_DIR below)
Nothing is downloaded: while the model is built, network access raises NeedsDownload.${weights_note}
"""
import contextlib
import importlib
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

# --- set by the suite (scraper/worker/programs.py renders these lines) ---
MODEL = "resnet50"
TEST = "eval"  # TorchBench's test: "eval" (inference) or "train"
BATCH_SIZE = None  # None: the model's own DEFAULT_EVAL_BSIZE / DEFAULT_TRAIN_BSIZE
DTYPE = torch.float32
TRAINING = False
INFERENCE_GRAD = False  # the forward itself takes gradients (PyTorch's pick_grad)
RANDOM_WEIGHTS = False  # pretrained checkpoints are not fetched: the random initialization stays
TORCHBENCH_DIR = "benchmark"  # the checkout it was compiled from
# --- end of the suite's settings ---
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
        raise NeedsDownload(f"needs download: {target}")


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
        wanted = f"{package}.{MODEL}"
        try:
            return importlib.import_module(wanted)
        except ModuleNotFoundError as exc:
            if not wanted.startswith(exc.name or "?"):  # a package the model imports is missing
                raise
    raise NotInCheckout(f"no model {MODEL!r} in the TorchBench checkout {root}")


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
        return {key: cast(item) for key, item in value.items()}
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
    return model, tuple(inputs), {}


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
