"""Inputs of a scraped nn.Module's forward, found by trial in eager mode (paritybench's search, and more).

Each required parameter of forward gets a role from its type hint and name: a float tensor (all of them share one
`layout`, the shape being searched), token ids (integers below the model's vocabulary), an optional mask or
state (None first), a plain number, a tuple or dict of tensors. Layouts are tried from these starts, in order
(recorded as the module's `inputs` path):
    usage <file:line>   the tensors the repository's own tests or examples pass (scraper.modules.usage)
    docstring           shapes the class or forward docstring gives (`x: (B, L, D)`), sizes from the model
    model               from the model itself: its first layer (Linear in_features, Conv channels and rank, norm
                        sizes) and size attributes (dim, hidden_size, num_heads, head_dim ...), ranks 2 to 4
    generic             a fixed list of common shapes
and each failure is repaired from its message (the table scraper.worker.infer.repairs.INPUTS says which failure
calls for which change; the changes are the functions at the end of this file): the features a matmul or norm
wants, the channels a convolution wants, the rank it expects (4-D vs 3-D), a broadcast or view that does not fit,
a tuple where forward unpacks its argument, a dict where it indexes it with strings, token ids where an index is
expected, a tensor where None was given, bfloat16 where a kernel only takes half precision.
"""

from __future__ import annotations

import inspect
import math
import re
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

from scraper.worker.infer import setup
from scraper.worker.infer.errors import Failure, failure_of, first_new_repair
from scraper.worker.infer.values import BATCH, HEADS, HEAD_DIM, HIDDEN, PASS_THROUGH, VOCAB, annotation_text, \
    strip_optional, tensor_expression

LENGTH, SIDE = 64, 32
MAX_INPUT_TRIALS = 60
REPEATED = 4  # the same error for this many inputs in a row: no input will do, the search stops
GENERIC_LAYOUTS = [(BATCH, LENGTH, HIDDEN), (BATCH, HIDDEN), (BATCH, 3, SIDE, SIDE), (BATCH, HIDDEN, SIDE, SIDE),
                   (BATCH, HEADS, LENGTH, HEAD_DIM), (BATCH, LENGTH, HEADS, HEAD_DIM), (BATCH, HIDDEN, LENGTH),
                   (BATCH, 16), (BATCH, LENGTH, 16), (BATCH, 1, 28, 28), (BATCH * LENGTH, HIDDEN)]
IDS = re.compile(r"(.*_)?(ids|id|idx|index|indices|tokens?|labels?|targets?|positions?|token_ids|input_ids|"
                 r"seq_idx|classes|y)")
TARGETS = re.compile(r"(.*_)?(labels?|targets?|y|classes)")
MASKS = re.compile(r"(.*_)?(mask|masks|bias|attn_mask|attention_mask|key_padding_mask|padding_mask)")
LENGTHS = re.compile(r"(.*_)?(lengths|lens|lengths_\w+)|[io]lens")  # one per sequence (`length` alone: a number)
STATES = re.compile(r"(.*_)?(cache|caches|past|past_key_values?|state|states|inference_params|kv_cache|"
                    r"layer_past|memory|hidden_state_prev|prev|conv_state|ssm_state|position_embeddings|"
                    r"cu_seqlens\w*|freqs_cis|rotary\w*|cos|sin)")
SCALARS = {"seq_len": str(LENGTH), "seqlen": str(LENGTH), "max_seqlen": str(LENGTH), "length": str(LENGTH),
           "start_pos": "0", "offset": "0", "layer_idx": "0", "step": "0", "t": "0", "timestep": "0",
           "batch_size": str(BATCH), "bsz": str(BATCH), "h": str(SIDE), "w": str(SIDE), "height": str(SIDE),
           "width": str(SIDE), "H": str(SIDE), "W": str(SIDE), "n": str(LENGTH)}


@dataclass(frozen=True)
class Param:
    """One required parameter of forward and its role."""

    name: str
    role: str  # tensor | ids | none | scalar | tuple | dict | namespace | bool | lengths
    keyword: bool = False  # keyword-only
    detail: tuple = ()  # ids: (high,); tuple: (count,); dict/namespace: keys; scalar: (expression,); lengths: (device,)


@dataclass(frozen=True)
class Trial:
    """One candidate: the float tensors' layout, each parameter's role, the model's dtype (None: the suite's)."""

    layout: tuple
    params: tuple
    path: str
    dtype: Optional[str] = None
    overrides: tuple = ()  # (name, expression) given by a usage hint
    prepare: tuple = ()  # statements run before forward (setup.py): a process group, the model's caches

    def key(self) -> tuple:
        return self.layout, self.params, self.dtype, self.overrides, self.prepare

    def with_role(self, name: str, role: str, detail: tuple = ()) -> "Trial":
        params = tuple(replace(p, role=role, detail=detail) if p.name == name else p for p in self.params)
        return replace(self, params=params, overrides=tuple(o for o in self.overrides if o[0] != name))

    def expressions(self) -> tuple[list[str], dict[str, str]]:
        """(positional, keyword) argument expressions of this trial."""
        overrides = dict(self.overrides)
        args, kwargs = [], {}
        for param in self.params:
            value = overrides.get(param.name) or self.expression(param)
            (kwargs.__setitem__(param.name, value) if param.keyword else args.append(value))
        return args, kwargs

    def expression(self, param: Param) -> str:
        layout = self.layout
        if param.role == "ids":
            return tensor_expression(ids_shape(param.name, layout), "torch.long",
                                     param.detail[0] if param.detail else VOCAB)
        if param.role == "none":
            return "None"
        if param.role == "scalar":
            return param.detail[0]
        if param.role == "bool":
            return tensor_expression(layout[:2], "torch.bool")
        if param.role == "lengths":  # every sequence of the batch full length (sorted, as packing wants)
            length = layout[1] if len(layout) > 2 else LENGTH
            place = param.detail[0] if param.detail else "device"
            return f"torch.full(({layout[0]},), {length}, device={place}, dtype=torch.long)"
        if param.role == "tuple":
            return "(" + ", ".join([tensor_expression(layout)] * param.detail[0]) + ",)"
        if param.role in ("dict", "namespace"):
            items = ", ".join(f"{key!r}: {tensor_expression(layout)}" for key in param.detail)
            return "{" + items + "}" if param.role == "dict" else f"types.SimpleNamespace(**{{{items}}})"
        return tensor_expression(layout)


@dataclass
class Found:
    """Inputs that forward accepted."""

    args: list
    kwargs: dict
    path: str
    trials: int
    dtype: Optional[str] = None
    shapes: list = field(default_factory=list)  # shapes of the tensor arguments, in order
    prepare: tuple = ()  # statements the program runs after building the model (Trial.prepare)


class InputSearch:
    """The search for one constructed model; `run(expression list)` calls forward with evaluated arguments."""

    def __init__(self, model, facts, filename: str, call: Callable, cast: Callable, deadline: float,
                 repairs: list) -> None:
        self.model, self.facts, self.filename, self.call, self.cast = model, facts, filename, call, cast
        self.repairs = repairs  # the repair table of inputs (scraper.worker.infer.repairs.INPUTS)
        self.sizes: dict = {}  # what the model tells about its sizes (model_sizes), once placed
        self.params: list[Param] = []  # forward's required parameters and their roles
        self.trials, self.tried, self.errors, self.texts = 0, set(), [], []
        self.obstacle: Optional[BaseException] = None  # the first start's last error
        self.failure: Optional[Failure] = None  # the same, as read by the repairs
        self.failures: dict[str, Failure] = {}  # every distinct failure, first seen first (for the constructor)
        self.deadline = deadline

    def find(self, hints: list, place: Callable) -> Optional[Found]:
        """The first trial forward accepts (returning a tensor), or None; `place()` first puts the model on the
        device in eval mode (a module's own .to() may fail: that is the search's failure)."""
        try:
            place()
            self.sizes = model_sizes(self.model)
            self.params = forward_params(self.model, self.facts, self.sizes.get("vocab", VOCAB))
        except Exception as exc:  # scraped code
            self.obstacle, self.failure = exc, failure_of(exc, self.filename)
            self.errors.append(f"placing the model: {self.failure.text}")
            return None
        for trial in self.starts(hints):
            found = self.repair_loop(trial)
            if found is not None:
                return found
        return None

    def starts(self, hints: list) -> list[Trial]:
        """Usage hints, docstring shapes, the model's own sizes, then the generic layouts."""
        params = tuple(self.params)
        starts = [usage_trial(hint, params) for hint in hints if hint.get("inputs")]
        starts += [Trial(layout, params, "docstring") for layout in docstring_layouts(self.model, self.sizes)]
        starts += [Trial(layout, params, "model") for layout in model_layouts(self.model, self.sizes)]
        starts += [Trial(layout, params, "generic") for layout in GENERIC_LAYOUTS]
        return [start for start in starts if start is not None]

    def repair_loop(self, trial: Trial) -> Optional[Found]:
        """Try `trial`, repairing it after each failure, until forward accepts it or nothing new is left. The
        first start's last error stays as the `obstacle` reported when nothing works."""
        first = self.trials == 0
        while trial is not None and trial.key() not in self.tried:
            if self.trials >= MAX_INPUT_TRIALS or time.monotonic() > self.deadline or self.stuck():
                return None
            self.tried.add(trial.key())
            self.trials += 1
            args, kwargs = trial.expressions()
            try:
                self.cast(trial.dtype)
                output = self.call(args, kwargs, trial.prepare)
                if not has_tensor(output):
                    raise ValueError(f"forward returned no tensor ({type(output).__name__})")
                return Found(args, kwargs, trial.path, self.trials, trial.dtype, tensor_shapes(trial), trial.prepare)
            except Exception as exc:  # scraped code: any exception is a failed trial
                failure = failure_of(exc, self.filename)
                if self.obstacle is None or first:
                    self.obstacle, self.failure = exc, failure
                self.failures.setdefault(failure.text, failure)
                self.errors.append(f"{trial.layout}: {failure.text}")
                self.texts.append(failure.text)
                trial = None if self.stuck() else self.repair(trial, failure)
        return None

    def constructor_failures(self) -> list[Failure]:
        """What the constructor may be repaired from: the obstacle, then the other distinct failures (a repair of
        the inputs can hide an error about a constructor argument behind another)."""
        first = [self.failure] if self.failure is not None else []
        return first + [f for f in self.failures.values() if f is not self.failure]

    def stuck(self) -> bool:
        """The same error, with a message, for the last REPEATED inputs: inputs are not what it is about (a
        constructor argument may be; Constructor.rebuild gets the next word)."""
        last = self.texts[-REPEATED:]
        return len(last) == REPEATED and len(set(last)) == 1 and ": " in last[0]

    def repair(self, trial: Trial, failure: Failure) -> Optional[Trial]:
        """The first repair (the table's rows in order) that gives a trial not tried yet; None when there is none."""
        return first_new_repair(self.repairs, self, trial, failure)

    def culprits(self, trial: Trial, failure: Failure) -> list[str]:
        """Parameters the error message or the failing line names."""
        line = set(failure.names_in_line())
        named = [p.name for p in trial.params if re.search(rf"\b{re.escape(p.name)}\b", failure.message)]
        return list(dict.fromkeys(named + [p.name for p in trial.params if p.name in line]))


def forward_params(model, facts, vocab: int) -> list[Param]:
    """The required parameters of model.forward with their first roles (token ids below `vocab`); one tensor
    for a bare *args."""
    try:
        signature = inspect.signature(model.forward)
    except (TypeError, ValueError):
        return [Param("x", "tensor")]
    params = []
    for param in signature.parameters.values():
        if param.default is not inspect.Parameter.empty or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        params.append(first_role(param.name, annotation_text(param.annotation), param.kind == param.KEYWORD_ONLY,
                                 facts, vocab))
    if not params and any(p.kind == p.VAR_POSITIONAL for p in signature.parameters.values()):
        params.append(Param("x", "tensor"))
    return params


def first_role(name: str, annotation: str, keyword: bool, facts, vocab: int) -> Param:
    """A parameter's first role from its type hint, then its name, then how forward uses it."""
    optional = annotation.startswith("Optional[") or "None" in annotation
    text = strip_optional(annotation)
    lowered = name.lower()
    if re.fullmatch(r"(typing\.)?(int|float)", text) or (not text and name in SCALARS):
        return Param(name, "scalar", keyword, (SCALARS.get(name, "1" if "int" in text else "1.0"),))
    if text in ("bool",):
        return Param(name, "scalar", keyword, ("False",))
    if re.match(r"(Tuple|tuple|List|list|Sequence)\b", text) or facts.unpacked(name):
        return Param(name, "tuple", keyword, (facts.unpacked(name) or 2,))
    if re.match(r"(Dict|dict|Mapping)\b", text) or facts.keys(name):
        return Param(name, "dict", keyword, tuple(facts.keys(name)) or ("x",))
    # a function (`score_mod: Callable[...]`) is an optional hook more often than not: None first
    if (optional and "Tensor" in text and not IDS.fullmatch(lowered)) or STATES.fullmatch(lowered) or \
            MASKS.fullmatch(lowered) or text.startswith(("Callable", "typing.Callable", "collections.abc.Callable")):
        return Param(name, "none", keyword)
    if IDS.fullmatch(lowered):
        return Param(name, "ids", keyword, (vocab,))
    if LENGTHS.fullmatch(lowered):
        return Param(name, "lengths", keyword)
    return Param(name, "tensor", keyword)


def usage_trial(hint: dict, params: tuple) -> Optional[Trial]:
    """A trial from the tensors and values a repository's own call passes (positionally, in order)."""
    specs = hint["inputs"]
    tensors = [spec for spec in specs if "shape" in spec]
    if len(specs) < len([p for p in params if not p.keyword]) or not tensors:
        return None
    overrides = []
    for param, spec in zip([p for p in params if not p.keyword], specs):
        if "value" in spec:
            overrides.append((param.name, spec["value"]))
        else:
            dtype = spec.get("dtype", "float32")
            as_model = dtype in ("float32", "float16", "bfloat16", "float")
            overrides.append((param.name, tensor_expression(spec["shape"], "DTYPE" if as_model else
                                                            f"torch.{dtype}", spec.get("high"))))
    floats = [spec for spec in tensors if spec.get("dtype", "float32").startswith(("float", "bfloat"))]
    layout = tuple((floats or tensors)[0]["shape"])
    dtype = next((f"torch.{spec['dtype']}" for spec in floats if spec.get("dtype") in ("float16", "bfloat16")),
                 None)
    return Trial(layout, params, f"usage {hint['where']}", dtype, tuple(overrides))


def ids_shape(name: str, layout: tuple) -> tuple:
    """Token ids beside float inputs of `layout`: targets and labels one per row of features (all dimensions
    but the last), other ids (input_ids, tokens) batch x length."""
    if TARGETS.fullmatch(name.lower()):
        return layout[:-1] or (BATCH,)
    return layout[:2] if len(layout) > 2 else (layout[0], LENGTH)


def tensor_shapes(trial: Trial) -> list[list[int]]:
    """Shapes of the float tensors a trial passes (the layout, once per tensor parameter, or the shape of a
    tensor a repair or a usage gave the parameter)."""
    overrides = dict(trial.overrides)
    shapes = []
    for param in trial.params:
        own = re.match(r"torch\.rand\(\(([\d, ]+)\)", overrides.get(param.name, ""))
        if own:
            shapes.append([int(d) for d in own.group(1).split(",") if d.strip()])
        elif param.role == "tensor":
            shapes.append(list(trial.layout))
    return shapes


# ------------------------------------------------------------------------------------------ what the model says


def model_sizes(model) -> dict:
    """Sizes the model tells: features (its first layer's input size), channels and rank of its first
    convolution, heads and head size, vocabulary."""
    import torch

    sizes: dict = {}
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            sizes.setdefault("features", module.in_features)
        elif isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
            sizes.setdefault("conv", (module.in_channels, module.weight.dim() - 2))
            sizes.setdefault("features", module.in_channels)
        elif isinstance(module, torch.nn.Embedding):
            sizes.setdefault("vocab", module.num_embeddings)
        elif isinstance(module, (torch.nn.LayerNorm, getattr(torch.nn, "RMSNorm", torch.nn.LayerNorm))):
            shape = tuple(module.normalized_shape)
            sizes.setdefault("features", shape[-1] if shape else HIDDEN)
        elif isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.GroupNorm)):
            sizes.setdefault("features", getattr(module, "num_features", getattr(module, "num_channels", HIDDEN)))
    for name, value in vars(model).items():
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 1 << 14:
            key = size_kind(name)
            if key:
                sizes.setdefault(key, value)
    return sizes


def size_kind(name: str) -> Optional[str]:
    """features | heads | head_dim | vocab for a model attribute name; None for others."""
    lowered = name.lower()
    if re.fullmatch(r"(n|num)_?(kv_)?heads?|nheads?|heads|num_attention_heads", lowered):
        return "heads"
    if re.fullmatch(r"head_dim|dim_head|d_head|head_size|headdim", lowered):
        return "head_dim"
    if re.fullmatch(r"(vocab_size|num_embeddings|n_vocab)", lowered):
        return "vocab"
    if re.fullmatch(r"(dim|d_model|hidden_size|hidden_dim|embed_dim|n_embd|in_features|in_channels|num_features|"
                    r"in_dim|input_dim|d_in|width|channels|hidden)", lowered):
        return "attribute_features"
    return None


def model_layouts(model, sizes: dict) -> list[tuple]:
    """Layouts built from the model's sizes: its convolution's rank and channels, else features last at ranks
    3, 2 and 4, attention shapes from heads and head size."""
    layouts = []
    if "conv" in sizes:
        channels, rank = sizes["conv"]
        layouts.append((BATCH, channels) + {1: (LENGTH,), 2: (SIDE, SIDE), 3: (8, 16, 16)}.get(rank, (SIDE,)))
    for features in dict.fromkeys(filter(None, (sizes.get("attribute_features"), sizes.get("features")))):
        layouts += [(BATCH, LENGTH, features), (BATCH, features), (BATCH, features, SIDE, SIDE),
                    (BATCH, 8, 8, features)]
    heads, head_dim = sizes.get("heads"), sizes.get("head_dim")
    if heads and not head_dim and sizes.get("attribute_features"):
        head_dim = sizes["attribute_features"] // heads or None
    if heads and head_dim:
        layouts += [(BATCH, LENGTH, heads, head_dim), (BATCH, heads, LENGTH, head_dim)]
    return layouts


DOC_SHAPE = re.compile(r"[(\[]\s*((?:[A-Za-z_]\w*|\d+)(?:\s*[,x×]\s*(?:[A-Za-z_]\w*|\d+)){1,4})\s*,?\s*[)\]]")
DOC_BATCH = {"b", "batch", "bs", "bsz", "batch_size", "nb"}
DOC_LENGTH = {"l", "t", "s", "n", "seq", "seq_len", "seqlen", "len", "length", "tokens", "num_tokens",
              "sequence_length", "seq_length", "nt", "m"}
DOC_FEATURES = {"d", "dim", "c", "channels", "hidden", "d_model", "e", "embed_dim", "features", "hidden_size",
                "hidden_dim", "emb", "channel", "in_channels", "num_features", "in_features", "model_dim"}
DOC_HEADS = {"h", "heads", "nh", "nheads", "num_heads", "n_heads"}
DOC_HEAD_DIM = {"dh", "d_head", "head_dim", "hd", "k", "dk", "d_k", "headdim"}
DOC_SIDE = {"w", "width", "height", "x", "y", "z", "hh", "ww"}


def docstring_layouts(model, sizes: dict) -> list[tuple]:
    """Layouts from the shapes written in the class's and forward's docstrings: `(B, L, D)`, `[b, c, h, w]`,
    `batch x seq x dim`; each name becomes a size (features and heads from the model)."""
    text = "\n".join(own_docstrings(type(model)))
    layouts = []
    for match in DOC_SHAPE.finditer(text):
        tokens = [token.strip().lower() for token in re.split(r"[,x×]", match.group(1))]
        layout = doc_layout(tokens, sizes)
        if layout and layout not in layouts:
            layouts.append(layout)
    return layouts[:4]


def own_docstrings(cls) -> list[str]:
    """The docstrings of forward and of the class, from the class and its bases up to torch's own classes
    (whose docstrings are examples for other modules)."""
    docs = []
    for klass in cls.__mro__:
        if klass.__module__.startswith("torch"):
            break
        forward = klass.__dict__.get("forward")
        docs += [doc for doc in (getattr(forward, "__doc__", None), klass.__dict__.get("__doc__")) if doc]
    return docs


def doc_layout(tokens: list[str], sizes: dict) -> Optional[tuple]:
    """The sizes of one docstring shape; None when a name is unknown (not a shape, probably)."""
    image = {"c", "channels"} & set(tokens) and DOC_SIDE & set(tokens) or ("h" in tokens and "w" in tokens)
    features = sizes.get("attribute_features") or sizes.get("features") or HIDDEN
    if "conv" in sizes:
        features = sizes["conv"][0]
    layout = []
    for position, token in enumerate(tokens):
        if token.isdigit():
            layout.append(int(token))
        elif token in DOC_BATCH or (position == 0 and token == "n"):
            layout.append(BATCH)
        elif image and token in DOC_SIDE | {"h"}:
            layout.append(SIDE)
        elif token in DOC_HEADS:
            layout.append(sizes.get("heads", HEADS))
        elif token in DOC_HEAD_DIM:
            layout.append(sizes.get("head_dim", HEAD_DIM))
        elif token in DOC_FEATURES:
            layout.append(features)
        elif token in DOC_LENGTH:
            layout.append(LENGTH)
        else:
            return None
    return tuple(layout) if 2 <= len(layout) <= 5 and all(0 < d <= 4096 for d in layout) else None


def has_tensor(value, depth: int = 0) -> bool:
    """Whether a forward output holds a tensor (in nested tuples, lists, dicts, or attributes of an output
    object)."""
    import torch

    if isinstance(value, torch.Tensor):
        return True
    if depth > 4:
        return False
    if isinstance(value, dict):
        return any(has_tensor(v, depth + 1) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(has_tensor(v, depth + 1) for v in value)
    return hasattr(value, "__dict__") and any(has_tensor(v, depth + 1) for v in vars(value).values())


# ------------------------------------------------------------------------------------------ changes
# Each change: (search, trial, failure, match) -> candidate trials, best first. Which failure each is for is the
# repair table's (scraper.worker.infer.repairs.INPUTS); `match` is that row's match of `Kind: message`.


def relayout(trial: Trial, layout) -> Optional[Trial]:
    layout = tuple(int(d) for d in layout)
    if not layout or any(d <= 0 or d > 1 << 14 for d in layout) or math.prod(layout) > 1 << 24:
        return None
    return replace(trial, layout=layout, overrides=tuple(o for o in trial.overrides if "rand(" not in o[1]))


def matmul_features(self: InputSearch, trial: Trial, failure: Failure, match):
    """The features the matmul wants, last."""
    wanted = int(match.group(3))
    return [relayout(trial, trial.layout[:-1] + (wanted,)), relayout(trial, (BATCH, wanted)),
            relayout(trial, (BATCH, LENGTH, wanted))]


def norm_features(self: InputSearch, trial: Trial, failure: Failure, match):
    """The trailing shape the norm wants."""
    wanted = tuple(int(d) for d in match.group(1).split(","))
    return [relayout(trial, trial.layout[:-len(wanted)] + wanted), relayout(trial, (BATCH, LENGTH) + wanted)]


def channels(self: InputSearch, trial: Trial, failure: Failure, match):
    """The channels the convolution wants, second."""
    if len(trial.layout) < 2:
        return []
    return [relayout(trial, (trial.layout[0], int(match.group(1))) + trial.layout[2:])]


def rank(self: InputSearch, trial: Trial, failure: Failure, match):
    """Another number of dimensions: what the error asks for (`Expected 4D input`, `expected 3D or 4D input`,
    unpacking x.shape into N names), keeping the features last."""
    wanted = [int(n) for n in re.findall(r"(\d)[D-](?:dimensional)?|<= ?(\d) dim|(\d) dimensions", failure.message)
              for n in n if n and 1 <= int(n) <= 5 and int(n) != len(trial.layout)]
    unpack = failure.search(r"(?:not enough|too many) values to unpack \(expected (\d+)")
    if unpack and re.search(r"\.(shape|size\(\))", failure.line):
        wanted.insert(0, int(unpack.group(1)))
    axis = failure.search(r"[Dd]imension out of range \(expected to be in range of \[-(\d+), \d+\], but got (-?\d+)\)")
    if axis and abs(int(axis.group(2))) < 8:  # a larger axis is a size given as one: the constructor's
        wanted.append(len(trial.layout) + 1)
    features = trial.layout[-1]
    shapes = {1: (features,), 2: (BATCH, features), 3: (BATCH, LENGTH, features), 4: (BATCH, features, SIDE, SIDE),
              5: (BATCH, features, 4, 8, 8)}
    candidates = [relayout(trial, shapes[n]) for n in wanted if n in shapes]
    return candidates + [relayout(trial, (BATCH, 8, 8, features))] if 4 in wanted else candidates


def unpacked_tuple(self: InputSearch, trial: Trial, failure: Failure, match):
    """A tuple where forward unpacks a parameter itself (`a, b = x`)."""
    names = re.findall(r"=\s*(\w+)\s*$", failure.line)
    return [trial.with_role(name, "tuple", (int(match.group(1)),)) for name in names
            if any(p.name == name and p.role != "tuple" for p in trial.params)]


def broadcast(self: InputSearch, trial: Trial, failure: Failure, match):
    """The size a broadcast, an expand or a shape check wants at dimension d."""
    a, b, dim = (int(g) for g in match.groups())
    candidates = []
    for index in (dim, dim - 1, dim + 1, len(trial.layout) - 1):
        if 0 <= index < len(trial.layout):
            for wanted in (b, a):
                if trial.layout[index] != wanted:
                    candidates.append(relayout(trial, trial.layout[:index] + (wanted,) + trial.layout[index + 1:]))
    return candidates


def view_size(self: InputSearch, trial: Trial, failure: Failure, match):
    """A last dimension that lets a view/reshape to the shape in the error work."""
    target = [int(d) for d in match.group(1).split(",")]
    known = math.prod(d for d in target if d > 0)
    rest = math.prod(trial.layout[:-1]) or 1
    own = own_shape(trial, failure, target)
    if -1 not in target and known % rest == 0:
        return own + [relayout(trial, trial.layout[:-1] + (known // rest,)), relayout(trial, tuple(target))]
    return own + [relayout(trial, trial.layout[:-1] + (trial.layout[-1] * known // math.gcd(trial.layout[-1], known),))]


def own_shape(trial: Trial, failure: Failure, target: list) -> list:
    """A tensor of its own shape for the parameter the failing line views (`freqs_cis.view(1, S, 1, D, 2)`): it
    is not one of the float inputs sharing the layout, but a table of another shape; ids too (`batch_idx.view(B,
    1)`: one per sequence, not one per token)."""
    if -1 in target:
        return []
    viewed = set(re.findall(r"(\w+)\.(?:view|reshape)\(", failure.line))
    candidates = []
    for param in trial.params:
        if param.name not in viewed or param.name in dict(trial.overrides) or param.role not in ("tensor", "ids"):
            continue
        value = tensor_expression(target) if param.role == "tensor" else \
            tensor_expression(target, "torch.long", param.detail[0] if param.detail else VOCAB)
        candidates.append(replace(trial, overrides=(*trial.overrides, (param.name, value))))
    return candidates


def ids_for_index(self: InputSearch, trial: Trial, failure: Failure, match):
    """Token ids where an integer index is expected."""
    vocab = self.sizes.get("vocab", VOCAB)
    return [trial.with_role(name, "ids", (vocab,)) for name in self.culprits(trial, failure) or
            [p.name for p in trial.params] if any(p.name == name and p.role != "ids" for p in trial.params)]


def smaller_ids(self: InputSearch, trial: Trial, failure: Failure, match):
    """Smaller token ids where they are out of range."""
    return [trial.with_role(p.name, "ids", (2,)) for p in trial.params if p.role == "ids" and p.detail != (2,)]


def tuple_for_tensor(self: InputSearch, trial: Trial, failure: Failure, match):
    """A tuple of 2, 3 or 4 tensors where forward concatenates or stacks a parameter itself (`torch.cat(feats,
    dim=1)`)."""
    return [trial.with_role(name, "tuple", (count,)) for name in self.culprits(trial, failure) for count in (2, 3, 4)
            if any(p.name == name and p.role == "tensor" for p in trial.params)]


def tensor_for_none(self: InputSearch, trial: Trial, failure: Failure, match):
    """A tensor (float, or a boolean mask) where None was given and the module uses it."""
    nones = [p for p in trial.params if p.role == "none"]
    named = set(self.culprits(trial, failure))
    ordered = [p for p in nones if p.name in named] + [p for p in nones if p.name not in named]
    return [trial.with_role(p.name, "bool" if MASKS.fullmatch(p.name.lower()) else "tensor") for p in ordered]


def dict_for_tensor(self: InputSearch, trial: Trial, failure: Failure, match):
    """A dict of tensors where forward indexes a parameter with strings."""
    return [trial.with_role(name, "dict", tuple(self.facts.keys(name)) or ("x",))
            for name in self.culprits(trial, failure)]


def namespace_for_tensor(self: InputSearch, trial: Trial, failure: Failure, match):
    """An object with tensor attributes where forward reads attributes a tensor does not have."""
    if match.group(1) in ("keys", "items", "values", "get"):  # a dict's (dict_for_tensor)
        return []
    return [trial.with_role(name, "namespace", tuple(dict.fromkeys([match.group(1), *self.facts.attributes(name)])))
            for name in self.culprits(trial, failure)]


def half_precision(self: InputSearch, trial: Trial, failure: Failure, match):
    """bfloat16 (then float16) model and inputs where a kernel takes only half precision."""
    if failure.search(r"expected .*Float.* but .*(Half|BFloat16)"):
        return []
    return [replace(trial, dtype="torch.bfloat16"), replace(trial, dtype="torch.float16")]


def divisible_layout(self: InputSearch, trial: Trial, failure: Failure, match):
    """Sizes rounded up to a multiple of what the error asks."""
    factor = int(match.group(1))
    if factor < 2:
        return []
    layout = tuple(d if i == 0 else factor * -(-d // factor) for i, d in enumerate(trial.layout))
    return [relayout(trial, layout)]


def attribute_sizes(self: InputSearch, trial: Trial, failure: Failure, match):
    """Sizes a failing assertion or check compares against: integer attributes of the model named in the
    failing line (`assert x.shape[-1] == self.dim`), as the last or the second dimension."""
    if not failure.line:
        return []
    values = [value for value in (vars(self.model).get(name) for name in failure.names_in_line())
              if isinstance(value, int) and not isinstance(value, bool)]
    candidates = []
    for value in dict.fromkeys(v for v in values if 0 < v <= 1 << 14):
        candidates += [relayout(trial, trial.layout[:-1] + (value,)),
                       relayout(trial, trial.layout[:1] + (value,) + trial.layout[2:])]
    return candidates


def expected_size(self: InputSearch, trial: Trial, failure: Failure, match):
    """The size a check names (`Expected input size 256, but got 64`): in place of the one it got."""
    wanted, got = int(match.group(1)), int(match.group(2))
    return [relayout(trial, trial.layout[:i] + (wanted,) + trial.layout[i + 1:])
            for i in reversed(range(len(trial.layout))) if trial.layout[i] == got]


def scalar_for_tensor(self: InputSearch, trial: Trial, failure: Failure, match):
    """A number where forward uses a parameter as one (`torch.arange(n)`, `range(n)`, an index)."""
    return [trial.with_role(name, "scalar", (str(LENGTH),)) for name in self.culprits(trial, failure)
            if any(p.name == name and p.role != "scalar" for p in trial.params)]


def process_group(self: InputSearch, trial: Trial, failure: Failure, match):
    """A process group of one rank (this process) where forward calls torch.distributed collectives."""
    return [with_prepare(trial, setup.PROCESS_GROUP_CALL)]


def cache_setup(self: InputSearch, trial: Trial, failure: Failure, match):
    """The model's own cache set-up (gpt-fast's `setup_caches(max_batch_size, max_seq_length)`) where forward
    says its caches are not set up."""
    return [with_prepare(trial, call) for call in setup.cache_calls(self.model)]


POSITIONS = re.compile(r"(input_|cache_)?(pos|positions?|position_ids)")


def optional_positions(self: InputSearch, trial: Trial, failure: Failure, match):
    """Positions 0..L-1 for forward's optional position parameter (gpt-fast's `input_pos=None`, which its cache
    and rotary tables are indexed with) once the model has failed without them; L is the ids' or the features'
    length."""
    given = {p.name for p in trial.params}
    names = [name for name in optional_params(self.model) if POSITIONS.fullmatch(name.lower()) and name not in given]
    ids = [p for p in trial.params if p.role == "ids"]
    length = ids_shape(ids[0].name, trial.layout)[-1] if ids else trial.layout[1] if len(trial.layout) > 2 else LENGTH
    return [replace(trial, params=trial.params + (Param(name, "scalar", True,
                                                        (f"torch.arange({length}, device=device)",)),))
            for name in names]


def optional_params(model) -> list[str]:
    """Names of forward's parameters that have a default."""
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in parameters if p.default is not inspect.Parameter.empty]


def with_prepare(trial: Trial, statement: Optional[str]) -> Optional[Trial]:
    """`trial` with one more statement run before forward (None when there is none or it is there already)."""
    if statement is None or statement in trial.prepare:
        return None
    return replace(trial, prepare=trial.prepare + (statement,))


def number_for_condition(self: InputSearch, trial: Trial, failure: Failure, match):
    """A number (0, as paritybench) for a parameter a condition or a Python number is made of (`if t + start >=
    self.max_step:` with a tensor for `start`); the first parameter last, as it is the input more often."""
    named = set(self.culprits(trial, failure))
    names = [p.name for p in trial.params if p.name in named and p.role in ("tensor", "ids", "lengths")]
    names.sort(key=lambda name: name == trial.params[0].name)
    return [trial.with_role(name, "scalar", ("0",)) for name in names]


def tensor_for_number(self: InputSearch, trial: Trial, failure: Failure, match):
    """A tensor where forward reads a tensor's attribute of a number or a bool it was given (a `bool` hint, a
    repository's call passing `True`)."""
    return [trial.with_role(name, "tensor") for name in self.culprits(trial, failure)
            if any(p.name == name and p.role == "scalar" for p in trial.params)]


def bigger_images(self: InputSearch, trial: Trial, failure: Failure, match):
    """Larger spatial sizes (x2, x4, x8, up to 512) where a kernel or a pooling is larger than what is left of
    the image: a deep encoder halves 32 x 32 to nothing."""
    if len(trial.layout) < 3:
        return []
    return [relayout(trial, trial.layout[:2] + tuple(d * factor for d in trial.layout[2:])) for factor in (2, 4, 8)
            if max(trial.layout[2:]) * factor <= 512]


def rank_named(self: InputSearch, trial: Trial, failure: Failure, match):
    """The number of dimensions the error names (each group of the row's match), features last."""
    features = trial.layout[-1]
    shapes = {1: (features,), 2: (BATCH, features), 3: (BATCH, LENGTH, features), 4: (BATCH, features, SIDE, SIDE),
              5: (BATCH, features, 4, 8, 8)}
    wanted = [int(n) for n in match.groups() if n and int(n) != len(trial.layout)]
    return [relayout(trial, shapes[n]) for n in wanted if n in shapes]


def matrix(self: InputSearch, trial: Trial, failure: Failure, match):
    """Two dimensions (batch x features) where forward multiplies its input as a matrix (`torch.mm`)."""
    return [relayout(trial, (BATCH, trial.layout[-1])), relayout(trial, trial.layout[-2:])]


def fewer_dims(self: InputSearch, trial: Trial, failure: Failure, match):
    """One dimension less (the last dropped), where forward repeats or expands its input into fewer (BERT's
    `(x > 0).unsqueeze(1).repeat(1, L, 1)` of token ids)."""
    return [relayout(trial, trial.layout[:-1])] if len(trial.layout) > 1 else []


def lengths_for_packing(self: InputSearch, trial: Trial, failure: Failure, match):
    """One length per sequence (int64) where forward packs a padded batch; on the CPU when the error says it
    must be there (pack_padded_sequence keeps lengths on the CPU)."""
    named = set(self.culprits(trial, failure)) | {p.name for p in trial.params if LENGTHS.fullmatch(p.name.lower())}
    on_cpu = "cuda" in failure.message
    params = sorted(trial.params, key=lambda p: p == trial.params[0])  # the first is the batch packed, most often
    return [trial.with_role(p.name, "lengths", ("'cpu'",) if on_cpu else ()) for p in params
            if p.name in named and (p.role != "lengths" or (on_cpu and not p.detail))]


def targets_like_input(self: InputSearch, trial: Trial, failure: Failure, match):
    """Targets of the input's own shape and dtype where a loss says so (BCE's `Target size (...) must be the
    same as input size`), instead of class ids."""
    return [trial.with_role(p.name, "tensor") for p in trial.params
            if p.role == "ids" and TARGETS.fullmatch(p.name.lower())]


def mask_that_broadcasts(self: InputSearch, trial: Trial, failure: Failure, match):
    """A mask of its own shape where the failing line multiplies or fills with one that does not broadcast:
    the input's with the channels one (glow-tts' `x * x_mask`, x_mask (B, 1, T)), or the features one."""
    named = set(self.culprits(trial, failure))
    masks = [p.name for p in trial.params if p.name in named and p.role == "bool" and p.name not in
             dict(trial.overrides)]
    layout = trial.layout
    shapes = [(layout[0], 1) + layout[2:], layout[:-1] + (1,)] if len(layout) > 2 else [layout]
    return [replace(trial, overrides=(*trial.overrides, (name, tensor_expression(shape, "torch.bool"))))
            for name in masks for shape in shapes]


def floats_for_ids(self: InputSearch, trial: Trial, failure: Failure, match):
    """Float tensors where forward computes with what was given as integer ids (a discriminator's `y`, a
    target a loss takes as probabilities); those the error or the failing line names first."""
    named = set(self.culprits(trial, failure))
    ids = sorted((p for p in trial.params if p.role == "ids"), key=lambda p: p.name not in named)
    return [trial.with_role(p.name, "tensor") for p in ids]


def layer_for_tensor(self: InputSearch, trial: Trial, failure: Failure, match):
    """A function returning its first argument where forward calls a parameter (`sublayer(self.norm(x))`, as
    paritybench's mock layer)."""
    called = set(re.findall(r"(\w+)\s*\(", failure.line))
    return [trial.with_role(p.name, "scalar", (PASS_THROUGH,)) for p in trial.params
            if p.name in called and p.role != "scalar"]

