"""Guesses for the value of one parameter (of __init__, of forward, or an attribute of a config object), from its
type hint, its name and what the module's source does with it. A guess is a Python expression (what the
program's build() writes, and what the worker evaluates to try it); it may use `torch`, `types`, `device` (the
build's device), `DTYPE` (the model's dtype) and the module's own names.

Sizes are chosen so that the usual relations hold together: hidden sizes 64 = 4 heads x 16 per head, kernel
3 with padding 1, vocabularies and maximum lengths larger than the inputs' values and lengths.
"""

from __future__ import annotations

import re
from typing import Optional

HIDDEN = 64  # feature / channel / hidden sizes
HEADS = 4
HEAD_DIM = HIDDEN // HEADS
MAX_LEN = 256  # maximum sequence lengths, position tables
VOCAB = 128  # vocabularies, classes, embeddings: input ids are drawn below this
BATCH = 2  # the inputs' batch: also what a constructor's batch size is (a cache allocated per sequence)

# Name rules, first match wins: (pattern on the lower-cased name, expression). Patterns match whole names or
# their `_`-separated parts.
NAME_RULES = [
    (r"(.*_)?dtype", "DTYPE"),
    (r"(.*_)?device", "device"),
    (r"(.*_)?(eps|epsilon)", "1e-05"),
    (r"(.*_)?(drop|dropout|drop_rate|dropout_rate|drop_path|drop_path_rate|p|attn_drop|proj_drop|pdrop)(_.*)?",
     "0.0"),
    (r"(use|is|with|has|enable|return|apply|add|do|need|skip)_.*|.*_(only|first|last)|causal|inplace|"
     r"residual|normalize|training|transpose|fused|fuse|verbose|debug|deterministic|checkpoint(ing)?", "False"),
    (r"bias|affine|elementwise_affine|learnable|trainable|batch_first|bidirectional", "True"),
    (r"(n|num|number_of)_?(kv_|key_value_|q_|query_|attention_)?heads?(_kv)?|nheads?|heads|n_kv_heads?|"
     r"num_heads_kv|groups_kv", str(HEADS)),
    (r"(head_dim|dim_head|d_head|head_size|headdim|d_k|d_v|d_kv|attention_head_size|kv_channels)", str(HEAD_DIM)),
    (r"(.*_)?(vocab|vocab_size|n_vocab|num_embeddings|ntoken|num_tokens|n_tokens|num_labels|num_classes|"
     r"n_classes|classes|n_class|num_class|codebook_size|num_codes)", str(VOCAB)),
    (r"(.*_)?(max_seq_len|max_seqlen|max_len|max_length|block_size|context_length|context_len|"
     r"max_position_embeddings|n_ctx|n_positions|num_positions|seq_len|seqlen|seq_length|max_seq_length|"
     r"max_batch_size|cache_size|max_tokens)", str(MAX_LEN)),
    (r"(n|num)_?(layers?|blocks?)|depths?|layers", "2"),
    (r"bsz|bs|batch|batch_size|n_batch|num_batch", str(BATCH)),
    (r"(.*_)?(idx|index|id|layer_id|layer_number|step|start_pos|offset)", "0"),
    (r"(kernel_size|kernel|ksize|k_size|conv_kernel|d_conv|conv_size)", "3"),
    (r"(stride|dilation)", "1"),
    (r"(padding|pad)", "1"),
    (r"(n|num)?_?groups?|group", "1"),
    (r"(mlp_ratio|ffn_mult|ff_mult|mult|expand|expansion|expand_ratio|expansion_factor|multiple_of)", "4"),
    (r"(.*_)?(scale|temperature|alpha|beta|gamma|softmax_scale|init_value|layer_scale|tau|factor|theta|"
     r"rope_theta|base)", "1.0"),
    (r"momentum|lr|learning_rate|weight_decay|ratio|rate|prob|probability|threshold|margin|smoothing", "0.1"),
    (r"(.*_)?(rank|lora_r|r)", "4"),
    (r"(.*_)?(bits|nbits|num_bits|w_bits|a_bits|wbits|abits)", "4"),
    (r"(group_size|groupsize|quant_group_size|block_k|chunk_size|chunk|window|window_size|page_size|"
     r"block_len|seg_len|segment_size)", "16"),
    (r"(n|num)_?experts?|experts", "4"),
    (r"(top_k|topk|k|num_experts_per_tok|n_activated_experts|num_activated_experts|num_selected|"
     r"moe_top_k|n_shared_experts)", "2"),
    (r"(d_state|state_size|ssm_state_size|n_state)", "16"),
    (r"(act|activation|act_fn|hidden_act|nonlinearity|activation_fn|act_layer_name)", "'gelu'"),
    (r"(.*_)?(act_layer|activation_layer|act_cls|activation_cls)", "torch.nn.GELU"),
    (r"(.*_)?(norm_layer|norm_cls)", "torch.nn.LayerNorm"),
    (r".*_(cls|class|layer|module_cls|block_cls)", "torch.nn.Identity"),
    (r"(fn|func|module|block|layer|net|model|backbone|encoder|decoder|mixer|sublayer|body|submodule)",
     "torch.nn.Identity()"),
    (r"(name|mode|type|kind|method|impl|backend|norm_type|attn_type|variant|style|pooling|reduction|"
     r"init|layout|provider|arch|version)", "'default'"),
    (r"(.*_)?(dim|dims|size|features|channels|hidden|width|planes|embd|embed|units|d_model|hidden_size|"
     r"intermediate_size|inner_dim|ffn_dim|d_ff|dim_ff|d_inner|emb|embedding|in|out|ch|chans|filters|c|d|"
     r"n_embd|n_embed|nf|nx|hid|model)(_.*)?|.*(features|channels|dim|size|width|hidden|planes)s?", str(HIDDEN)),
]
# What only a tensor has (a config may well have `dtype`, `device` or `size` fields).
TENSOR_READS = {"shape", "T", "ndim", "numel", "contiguous", "view", "reshape", "detach", "clone", "unsqueeze",
                "is_cuda", "t"}
CONFIG_NAMES = re.compile(r"(.*_)?(config|cfg|conf|args|opt|opts|options|params|hparams|hp|settings|"
                          r"model_args|configs)")
UNKNOWN_INT = "16"


def by_name(name: str) -> Optional[str]:
    """The expression of the first name rule matching `name`; None when none does."""
    lowered = name.lower()
    for pattern, value in NAME_RULES:
        if re.fullmatch(pattern, lowered):
            return value
    return None


def annotation_text(annotation) -> str:
    """A type hint as text (`Optional[int]`, `torch.Tensor`, `ModelArgs`), "" for none."""
    import inspect

    if annotation is inspect.Parameter.empty or annotation is None:
        return ""
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type):
        return f"{annotation.__module__}.{annotation.__qualname__}".removeprefix("builtins.")
    return str(annotation).replace("typing.", "")


def strip_optional(text: str) -> str:
    """`Optional[int]` / `int | None` / `Union[int, None]` -> `int`."""
    text = text.strip().strip("'\"")
    match = re.fullmatch(r"Optional\[(.*)\]", text)
    if match:
        return match.group(1).strip()
    parts = [part.strip() for part in re.split(r"\|", text)] if "|" in text and "[" not in text else [text]
    if len(parts) > 1:
        return next((part for part in parts if part != "None"), text)
    match = re.fullmatch(r"Union\[(.*),\s*None\]", text)
    return match.group(1).strip() if match else text


def by_annotation(name: str, text: str, namespace: dict) -> Optional[str]:
    """The expression a type hint asks for; None when the hint says nothing useful."""
    text = strip_optional(text)
    last = text.rsplit(".", 1)[-1]
    if not text or text in ("Any", "object"):
        return None
    if last in ("int", "float", "bool", "str"):
        return typed_by_name(name, last)
    if last == "Tensor" or last.endswith("Tensor"):
        return tensor_expression((HIDDEN, HIDDEN))
    if last == "dtype":
        return "DTYPE"
    if last == "device":
        return "device"
    container = re.fullmatch(r"(?:typing\.)?(List|list|Sequence|Tuple|tuple|Iterable)\[(.*)\]", text)
    if container or last in ("list", "tuple", "List", "Tuple", "Sequence"):
        item = typed_by_name(name, container.group(2).split(",")[0].strip() if container else "int")
        items = f"{item}, {item}"
        return f"({items})" if (container and container.group(1).lower() == "tuple") or last == "tuple" \
            else f"[{items}]"
    if last in ("dict", "Dict", "Mapping") or text.startswith(("Dict[", "dict[", "Mapping[")):
        return "{}"
    own = getattr(namespace.get(last), "__module__", "torch")  # a class of the module's own of that name: below
    if last in LAYERS and "Type[" not in text and own.startswith("torch"):  # `base: nn.Linear`: not an Identity
        return LAYERS[last]
    if re.search(r"Callable|Module|Type\[", text):
        return module_expression(name, instance="Type[" not in text)
    cls = namespace.get(last)
    if isinstance(cls, type) and not cls.__module__.startswith(("torch", "typing", "builtins")):
        return class_expression(last, cls, namespace)
    return None


def class_expression(name: str, cls: type, namespace: dict) -> str:
    """A value of a class of the module: an Enum's first member; else a call with guesses for its required
    parameters, and for size-like ones whose default is a placeholder (-1, 0, None) or a layer count (a config
    dataclass: `ModelArgs(n_layer=2)`, small and fast to compile)."""
    import enum
    import inspect

    if issubclass(cls, enum.Enum):
        members = list(cls)
        return f"{name}.{members[0].name}" if members else f"{name}()"
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return f"{name}()"
    arguments = []
    for param in params:
        if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            continue
        guess = by_name(param.name)
        placeholder = param.default in (-1, 0, None) and guess and re.fullmatch(r"[\d.e+-]+", guess)
        layers = guess == "2" and param.default is not inspect.Parameter.empty
        if param.default is inspect.Parameter.empty:
            typed = by_annotation(param.name, annotation_text(param.annotation), {})
            arguments.append(f"{param.name}={typed or guess or UNKNOWN_INT}")
        elif placeholder or layers:
            arguments.append(f"{param.name}={guess}")
    return f"{name}({', '.join(arguments)})"


def typed_by_name(name: str, kind: str) -> str:
    """A value of type `kind` (int, float, bool, str) for parameter `name`."""
    value = by_name(name)
    if kind == "bool":
        return value if value in ("True", "False") else "False"
    if kind == "str":
        return value if value and (value.startswith("'") or value == "device") else "'default'"
    if kind == "float":
        return str(float(value)) if value and re.fullmatch(r"[\d.e+-]+", value) else "1.0"
    if value and re.fullmatch(r"\d+", value):
        return value
    if value and re.fullmatch(r"[\d.e+-]+", value):
        return str(max(1, int(float(value))))
    return UNKNOWN_INT


# Layers a module may be given, with the usual sizes; and the attributes a module reads of a layer it was given
# (`base.in_features`) that tell which one it wants. `weight` and `bias` are any layer's: a Linear's first.
LAYERS = {
    "Linear": f"torch.nn.Linear({HIDDEN}, {HIDDEN})",
    "Conv1d": f"torch.nn.Conv1d({HIDDEN}, {HIDDEN}, 3, padding=1)",
    "Conv2d": f"torch.nn.Conv2d({HIDDEN}, {HIDDEN}, 3, padding=1)",
    "LayerNorm": f"torch.nn.LayerNorm({HIDDEN})",
    "BatchNorm2d": f"torch.nn.BatchNorm2d({HIDDEN})",
    "Embedding": f"torch.nn.Embedding({VOCAB}, {HIDDEN})",
    "LSTM": f"torch.nn.LSTM({HIDDEN}, {HIDDEN}, batch_first=True)",
}
LAYER_ATTRIBUTES = {
    "Linear": ("in_features", "out_features", "weight", "bias"),
    "Conv2d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
               "padding_mode"),
    "LayerNorm": ("normalized_shape", "elementwise_affine", "eps"),
    "BatchNorm2d": ("num_features", "running_mean", "running_var", "momentum", "track_running_stats"),
    "Embedding": ("num_embeddings", "embedding_dim", "padding_idx"),
    "LSTM": ("input_size", "hidden_size", "num_layers", "bidirectional", "batch_first"),
}
ONLY_A_LAYERS = {"in_features", "out_features", "in_channels", "out_channels", "kernel_size", "normalized_shape",
                 "num_embeddings", "embedding_dim"}  # a plain value lacking one of these was meant to be a layer


def layer_with(attribute: str) -> Optional[str]:
    """The expression of the first layer of LAYER_ATTRIBUTES that has `attribute`; None when none has."""
    return next((LAYERS[layer] for layer, names in LAYER_ATTRIBUTES.items() if attribute in names), None)


PASS_THROUGH = "lambda x, *args, **kwargs: x"  # a layer that takes any arguments and gives back its input


def module_expression(name: str, instance: bool = True) -> str:
    """An nn.Module (class, or instance) for a parameter that takes a layer: a norm for norm-like names, an
    activation for activation-like ones, else Identity (which takes any arguments)."""
    lowered = name.lower()
    cls = "torch.nn.LayerNorm" if "norm" in lowered else "torch.nn.GELU" if "act" in lowered else \
        "torch.nn.Identity"
    if not instance:
        return cls
    return f"{cls}({HIDDEN})" if cls.endswith("LayerNorm") else f"{cls}()"


def tensor_expression(shape, dtype: str = "DTYPE", high: Optional[int] = None) -> str:
    """The expression of a random tensor of `shape` on `device`: floats (rand), integers below `high`
    (randint), booleans."""
    dims = ", ".join(str(int(d)) for d in shape)
    size = f"({dims},)" if len(shape) == 1 else f"({dims})"
    if dtype in ("torch.int64", "torch.int32", "torch.long", "torch.int"):
        return f"torch.randint(0, {high or VOCAB}, {size}, device=device, dtype={dtype})"
    if dtype == "torch.bool":
        return f"torch.ones({size}, device=device, dtype=torch.bool)"
    return f"torch.rand({size}, device=device, dtype={dtype})"


def namespace_expression(attributes: dict) -> str:
    """types.SimpleNamespace(a=..., b=...) of attribute expressions."""
    return "types.SimpleNamespace(" + ", ".join(f"{k}={v}" for k, v in attributes.items()) + ")"


def config_expression(names: list[str]) -> str:
    """A config object with a guess for each attribute the module reads from it."""
    return namespace_expression({name: attribute_guess(name) for name in names})


def attribute_guess(name: str) -> str:
    """A config attribute's value by its name (an unknown one: a size)."""
    value = by_name(name)
    if value in (None, "DTYPE", "device", "torch.nn.GELU", "torch.nn.LayerNorm"):
        return "'gelu'" if re.search(r"(^|_)(act|activation|hidden_act)($|_)", name) else \
            UNKNOWN_INT if value is None else value
    return value


def init_guess(name: str, annotation, namespace: dict, facts) -> str:
    """The first guess for a required constructor parameter: config objects from what the module reads of
    them (a tensor when what it reads is a tensor's, a dict when it indexes it with strings), then the type
    hint, then strings the module compares it with, then the name."""
    text = annotation_text(annotation)
    attributes = facts.attributes(name)
    if TENSOR_READS & set(attributes) and not text:
        return tensor_expression((HIDDEN, HIDDEN))
    keys = facts.keys(name, "__init__")
    if keys and not text:
        return "dict(" + ", ".join(f"{key}={attribute_guess(key)}" for key in keys if key.isidentifier()) + ")"
    if CONFIG_NAMES.fullmatch(name.lower()) and attributes and not by_annotation(name, text, namespace):
        return config_expression(attributes)
    typed = by_annotation(name, text, namespace)
    if typed is not None:
        if typed.startswith("'") and facts.choices(name):
            return repr(facts.choices(name)[0])
        return typed
    choices = facts.choices(name)
    if choices:
        return repr(choices[0])
    if attributes and not by_name(name):
        return config_expression(attributes)
    return by_name(name) or UNKNOWN_INT
