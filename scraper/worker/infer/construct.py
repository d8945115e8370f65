"""Constructor arguments of a scraped nn.Module: where to start, and how to repair a call that fails.

Starts, in order (each is recorded as the `init` path of the module that gets built from it):
    usage <file:line>   a call of the class in the repository's own tests, benchmarks or examples
                        (scraper.modules.usage), unknown values filled in by the guesses below
    defaults            no arguments, when every parameter has a default
    signature           a guess for each required parameter (scraper.worker.infer.values: type hint, name,
                        what the module reads from a config object, strings it compares a parameter with)
A start that fails is repaired from the error and tried again (the table scraper.worker.infer.repairs.INIT says
which failure calls for which change; the changes are the functions below): a keyword it does not take is
dropped, a missing one added, and the parameter the error or the failing line names gets a value of the kind the
error asks for (a tensor where `'int' object has no attribute 'device'`, a list where an int is not iterable, a
layer where it is not callable, a torch dtype, a config object with the attribute it lacks, the value or kind
the error names, a multiple of what it must be divisible by, another of the strings the module accepts, other
sizes for an assertion on sizes). `Constructor.rebuild` repairs a call from a forward error the same way.
"""

from __future__ import annotations

import ast
import inspect
import math
import re
import time
import typing
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

from scraper.worker.infer.errors import Failure, failure_of, first_new_repair
from scraper.worker.infer.values import HIDDEN, ONLY_A_LAYERS, PASS_THROUGH, attribute_guess, by_name, init_guess, \
    layer_with, module_expression, namespace_expression, tensor_expression

MAX_INIT_TRIALS = 48
SIZE_LADDER = ("64", "128", "256", "32", "16", "8", "4", "2", "1")
COMMON_CHOICES = ("gelu", "relu", "silu", "layer", "rms", "layernorm", "rmsnorm", "mean", "sum", "none", "default",
                  "linear", "softmax", "triton", "torch")
OFFERED = re.compile(r"one of|[Aa]vailable|[Ss]upported|choose from|[Ee]xpected|must be in|[Vv]alid")
TENSOR_ATTRIBUTES = ("device", "dtype", "shape", "size", "ndim", "dim", "numel", "to", "float", "half", "is_cuda",
                     "data", "contiguous", "view", "reshape", "clone", "new_zeros", "new_empty", "unsqueeze",
                     "type_as", "detach", "element_size", "T", "t", "is_floating_point", "requires_grad")


@dataclass
class Call:
    """Constructor arguments as expressions: keyword arguments, plus positional ones only where the signature
    has no name for them."""

    kwargs: dict = field(default_factory=dict)
    args: list = field(default_factory=list)

    def key(self) -> tuple:
        return tuple(self.args), tuple(sorted(self.kwargs.items()))

    def with_value(self, name: str, value: str) -> "Call":
        return Call({**self.kwargs, name: value}, list(self.args))

    def without(self, name: str) -> "Call":
        return Call({k: v for k, v in self.kwargs.items() if k != name}, list(self.args))


@dataclass
class Built:
    """A constructed model and how."""

    model: object
    call: Call
    path: str  # usage <where> | defaults | signature
    trials: int  # constructor calls made so far for this module


class Constructor:
    """Builds one class by trial; `evaluate(expression)` turns a guess into a value, `repairs` is the repair table
    of constructor calls (scraper.worker.infer.repairs.INIT)."""

    def __init__(self, cls, evaluate: Callable[[str], object], filename: str, facts, namespace: dict,
                 deadline: float, repairs: list) -> None:
        self.cls, self.evaluate, self.filename, self.facts, self.namespace = cls, evaluate, filename, facts, namespace
        self.repairs = repairs
        self.params = constructor_params(cls)
        self.trials, self.tried, self.errors = 0, set(), []
        self.obstacle: Optional[BaseException] = None  # the first start's last error
        self.deadline = deadline

    def models(self, hints: list) -> Iterator[Built]:
        """Every distinct model the starts (repaired) construct, best start first."""
        for path, start in self.starts(hints):
            built = self.repair_loop(start, path)
            if built is not None:
                yield built

    def starts(self, hints: list) -> list[tuple[str, Call]]:
        """(path, call) of each start: the repository's own calls, no arguments, guesses for the required ones."""
        starts = [(f"usage {hint['where']}", self.from_usage(hint["init"])) for hint in hints if "init" in hint]
        required = [name for name, param in self.params.items() if param.default is inspect.Parameter.empty]
        if not required:
            starts.append(("defaults", Call()))
        starts.append(("signature", Call({name: self.guess(name) for name in required})))
        return starts

    def from_usage(self, init: dict) -> Call:
        """A call from a usage hint: its known values, guesses for the unknown and the missing required ones."""
        names = [name for name, p in self.params.items() if p.kind != inspect.Parameter.KEYWORD_ONLY]
        call = Call()
        for position, value in enumerate(init.get("args", [])):
            if position < len(names):
                call.kwargs[names[position]] = value if value is not None else self.guess(names[position])
            else:
                call.args.append(value if value is not None else "16")
        for name, value in init.get("kwargs", {}).items():
            call.kwargs[name] = value if value is not None else self.guess(name)
        for name, param in self.params.items():
            if param.default is inspect.Parameter.empty and name not in call.kwargs:
                call.kwargs[name] = self.guess(name)
        return call

    def guess(self, name: str) -> str:
        param = self.params.get(name)
        annotation = param.annotation if param is not None else inspect.Parameter.empty
        return init_guess(name, annotation, self.namespace, self.facts)

    def repair_loop(self, call: Call, path: str) -> Optional[Built]:
        """Try `call`, repairing it after each failure, until it constructs or nothing new is left to try. The
        first start's last error stays as the `obstacle` reported when nothing works."""
        first = self.trials == 0
        while call is not None and call.key() not in self.tried:
            if self.trials >= MAX_INIT_TRIALS or time.monotonic() > self.deadline:
                return None
            self.tried.add(call.key())
            self.trials += 1
            try:
                args = [self.evaluate(value) for value in call.args]
                kwargs = {name: self.evaluate(value) for name, value in call.kwargs.items()}
                return Built(self.cls(*args, **kwargs), call, path, self.trials)
            except Exception as exc:  # scraped code: any exception is a failed trial
                failure = failure_of(exc, self.filename)
                self.obstacle = exc if self.obstacle is None or first else self.obstacle
                self.errors.append(failure.text)
                call = self.repair(call, failure)
        return None

    def repair(self, call: Call, failure: Failure) -> Optional[Call]:
        """The first repair (the table's rows in order) that gives a call not tried yet; None when there is none."""
        return first_new_repair(self.repairs, self, call, failure)

    def rebuild(self, built: "Built", failures: list) -> Optional["Built"]:
        """Another model for a forward that failed because of a constructor argument (a string it rejects, a
        layer it calls): the call repaired from the first of forward's errors that a repair reads, then repaired
        as usual."""
        for failure in failures:
            repaired = self.repair(built.call, failure)
            if repaired is not None:
                return self.repair_loop(repaired, built.path)
        return None

    def culprits(self, call: Call, failure: Failure) -> list[str]:
        """Constructor parameters the error names, those passed on to the helper whose line failed as the
        helper's parameters that line names (passed_on), those the failing line uses (directly or as self.<x>),
        then those the lines around it use; also parameters the call leaves to their defaults."""
        names = list(dict.fromkeys([*call.kwargs, *self.params]))
        named = [name for name in names if re.search(rf"(?<![\w.]){re.escape(name)}\b", failure.message)]
        return list(dict.fromkeys(named + self.used_in(names, self.passed_on(failure))
                                  + self.used_in(names, failure.names_in_line())
                                  + self.used_in(names, failure.names_around())))

    def used_in(self, names: list, identifiers: list) -> list[str]:
        """The parameters among `names` that `identifiers` (of a line) name, directly or as self.<x>."""
        found = set(identifiers)
        return [name for name in names if {holder.removeprefix("self.") for holder in self.facts.holders(name)} & found]

    def passed_on(self, failure: Failure) -> list[str]:
        """Identifiers of the arguments the line around the failing one passes to the helper that failed, as the
        helper's parameters the failing line names: `self.mlp = MLP(embed_dim, mlp_dims)` around `for d in
        embed_dims:` of `MLP(input_dim, embed_dims)` gives `mlp_dims` (the helper's own names may be those of
        other parameters here: `embed_dim`)."""
        if len(failure.lines) < 2:
            return []
        inner, found = set(failure.names_in_line()), []
        for node in calls_in(failure.lines[1]):
            signature = helper_signature(node.func, self.cls, self.namespace)
            try:
                bound = signature.bind_partial(*node.args, **{kw.arg: kw.value for kw in node.keywords if kw.arg})
            except (TypeError, AttributeError):  # no signature, or not this call's
                continue
            found += [ast.unparse(value) for name, value in bound.arguments.items() if name in inner]
        return re.findall(r"[A-Za-z_]\w*", " ".join(found))

    def current(self, call: Call, name: str) -> str:
        """The expression a parameter has in `call`: its own, else its default's (None when not a literal)."""
        if name in call.kwargs:
            return call.kwargs[name]
        default = self.params[name].default if name in self.params else None
        return repr(default) if isinstance(default, (int, float, str, bool)) else "None"


def constructor_params(cls) -> dict[str, inspect.Parameter]:
    """The constructor's parameters (self, *args, **kwargs left out), annotations resolved when possible."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return {}
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable forward references: keep the annotations' text
        hints = {}
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {name: p.replace(annotation=hints.get(name, p.annotation)) for name, p in signature.parameters.items()
            if p.kind in kinds}


def calls_in(line: str) -> list:
    """The calls of a source line (a statement, or the head of one: `for x in f(y):`), [] when it does not
    parse."""
    text = line.strip()
    for attempt in (text, text.rstrip(":") + ": pass", text.rstrip(":")):
        try:
            return [node for node in ast.walk(ast.parse(attempt)) if isinstance(node, ast.Call)]
        except SyntaxError:
            continue
    return []


def helper_signature(func: ast.expr, cls, namespace: dict):
    """The signature of the helper a call names (a class or function of the module, or `self.method`, without
    self); None when it is something else."""
    if isinstance(func, ast.Name):
        target = namespace.get(func.id)
    elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self":
        target = getattr(cls, func.attr, None)
    else:
        return None
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return None
    params = list(signature.parameters.values())
    method = isinstance(func, ast.Attribute) and params and params[0].name == "self"
    return signature.replace(parameters=params[1:]) if method else signature


# ------------------------------------------------------------------------------------------ changes
# Each change: (constructor, call, failure, match) -> candidate calls, best first. Which failure each is for is
# the repair table's (scraper.worker.infer.repairs.INIT); `match` is that row's match of `Kind: message`.


def drop_keyword(self: Constructor, call: Call, failure: Failure, match):
    """The keyword the error says the constructor does not take, dropped."""
    return [call.without(match.group(1))] if match.group(1) in call.kwargs else []


def add_missing(self: Constructor, call: Call, failure: Failure, match):
    """A guess for each argument the error says is missing."""
    # `missing ... argument: 'self'` is a method called on a class, not the constructor (instance_for_class)
    names = [name for name in re.findall(r"'(\w+)'", match.group(1)) if name != "self"]
    return [Call({**call.kwargs, **{name: self.guess(name) for name in names}}, list(call.args))] if names else []


def instance_for_class(self: Constructor, call: Call, failure: Failure, match):
    """A layer instance where a layer class was given and the module calls a method on it
    (`next(layer.parameters())`: `Module.parameters() missing 1 required positional argument: 'self'`)."""
    classes = [name for name, value in call.kwargs.items() if re.fullmatch(r"torch\.nn\.\w+", value)]
    return [call.with_value(name, module_expression(name)) for name in classes]


def provide_named(self: Constructor, call: Call, failure: Failure, match):
    """A value for a parameter left to a None default that the error or the failing line needs (`either mlstm
    or slstm must be provided`, `'NoneType' object has no attribute ...`)."""
    return [call.with_value(name, self.guess(name)) for name in self.culprits(call, failure)
            if self.current(call, name) == "None" and name not in call.kwargs]


def tensor_for_value(self: Constructor, call: Call, failure: Failure, match):
    """A tensor where the module reads a tensor's attribute of a plain value. A config object guessed for a
    parameter the module only read `.device` or `.dtype` of in __init__ meets `.T` or `.shape` later, often in a
    helper whose own parameter names say nothing: then every such object the call holds becomes a tensor."""
    if match.group(2) not in TENSOR_ATTRIBUTES:
        return []
    names = self.culprits(call, failure)
    if match.group(1).endswith("SimpleNamespace"):
        objects = [name for name, value in call.kwargs.items() if value.startswith("types.SimpleNamespace(")]
        if not set(names) & set(objects):
            tensor = tensor_expression((HIDDEN, HIDDEN))
            return [Call({**call.kwargs, **{name: tensor for name in objects}}, list(call.args))]
        names = [name for name in names if name in objects]
    return tensor_for(self, call, names)


def tensor_for_stored(self: Constructor, call: Call, failure: Failure, match):
    """A tensor where the module stores the value as a buffer or a parameter."""
    return tensor_for(self, call, self.culprits(call, failure))


def tensor_for(self: Constructor, call: Call, names: list) -> list:
    tensor = tensor_expression((HIDDEN, HIDDEN))
    return [call.with_value(name, tensor) for name in names if not self.current(call, name).startswith("torch.rand")]


def parameter_for_tensor(self: Constructor, call: Call, failure: Failure, match):
    """An nn.Parameter of the tensor given where the module ties it to a layer (`self.decoder.weight = weights`:
    `cannot assign 'torch.FloatTensor' as parameter 'weight'`)."""
    return [call.with_value(name, f"torch.nn.Parameter({call.kwargs[name]})") for name in self.culprits(call, failure)
            if call.kwargs.get(name, "").startswith("torch.rand")]


def vector_for_matrix(self: Constructor, call: Call, failure: Failure, match):
    """A vector where a tensor given to the constructor is flattened against the features (`scales.view(1, -1)`
    meets 64 features with the 4096 of a 64 x 64 guess): one of the size the broadcast wants."""
    a, b = int(match.group(1)), int(match.group(2))
    flattened = set(re.findall(r"(\w+)\.(?:view|reshape|flatten)\(", failure.line))
    holders = {name: {h.removeprefix("self.") for h in self.facts.holders(name)} for name in call.kwargs}
    candidates = []
    for name, value in sorted(call.kwargs.items(), key=lambda item: not holders[item[0]] & flattened):
        shape = re.match(r"torch\.rand\(\(([\d, ]+)\)", value)
        size = math.prod(int(d) for d in shape.group(1).split(",") if d.strip()) if shape else None
        if size in (a, b) and a != b:
            candidates.append(call.with_value(name, tensor_expression((b if size == a else a,))))
    return candidates


def config_for_value(self: Constructor, call: Call, failure: Failure, match):
    """A config object where the module reads attributes of a plain value or of a namespace that lacks one."""
    if match.group(2) in TENSOR_ATTRIBUTES + ("get", "keys", "items", "values") or \
            match.group(1) in ("Tensor", "Parameter"):
        return []
    wanted = match.group(2)
    repaired = []
    for name in self.culprits(call, failure):
        value = self.current(call, name)
        if value.startswith(("torch.rand", "DTYPE", "device")):
            continue
        attributes = namespace_attributes(value)
        if attributes is None:
            attributes = {attr: attribute_guess(attr) for attr in self.facts.attributes(name)}
        if wanted not in attributes:
            attributes[wanted] = attribute_guess(wanted)
            repaired.append(call.with_value(name, namespace_expression(attributes)))
    return repaired


def layer_for_attribute(self: Constructor, call: Call, failure: Failure, match):
    """A layer that has the attribute the module reads of what it was given: the module's own classes that
    define it (ResNet(block, layers) reads `block.expansion`: its BasicBlock), then a torch layer that has it
    (`base.in_features` of an Identity: a Linear), for a layer given, or a plain value lacking what only a layer
    has. Config objects, dicts and tensors keep their kind (config_for_value adds what a config lacks)."""
    attribute = match.group(2)
    own = own_classes_with(self.namespace, attribute)
    layer = layer_with(attribute)
    candidates = []
    for name in self.culprits(call, failure):
        value = self.current(call, name)
        if value.startswith(("types.SimpleNamespace(", "dict(", "torch.rand", "DTYPE", "device")):
            continue
        candidates += [call.with_value(name, cls) for cls in own]
        if layer and (value.startswith("torch.nn.") or attribute in ONLY_A_LAYERS):
            candidates.append(call.with_value(name, layer))
    return candidates


def own_classes_with(namespace: dict, attribute: str) -> list[str]:
    """Names of the module's own nn.Module classes whose body defines `attribute` (`expansion = 4`)."""
    import torch

    return [name for name, value in namespace.items() if isinstance(value, type) and issubclass(value, torch.nn.Module)
            and not value.__module__.startswith("torch") and attribute in vars(value)]


LITERAL = r"-?\d+(\.\d+)?|'[^']*'|\"[^\"]*\"|True|False|None"


def value_the_assert_lists(self: Constructor, call: Call, failure: Failure, match):
    """Each value an assertion lists for a parameter (`assert n_bits in (2, 3, 8)`, `assert x in [...]`)."""
    found = re.search(r"assert\s+(?:self\.)?(\w+)\s+in\s+[(\[{]([^)\]}]*)", failure.line)
    if not found or found.group(1) not in self.params:
        return []
    values = [value.strip() for value in found.group(2).split(",")]
    return [call.with_value(found.group(1), value) for value in values if re.fullmatch(LITERAL, value)]



def list_for_isinstance(self: Constructor, call: Call, failure: Failure, match):
    """A list where an assertion wants a parameter to be a list or a tuple (`assert isinstance(dims, (list,
    tuple))`)."""
    found = re.search(r"isinstance\(\s*(?:self\.)?(\w+)\s*,\s*\(?[^)]*\b(list|tuple|List|Tuple|Sequence)\b",
                      failure.line)
    if not found or found.group(1) not in self.params:
        return []
    value = self.current(call, found.group(1))
    item = value if re.fullmatch(r"-?\d+(\.\d+)?", value) else str(HIDDEN)
    return [call.with_value(found.group(1), f"[{item}, {item}]")]


VALUE = r"(True|False|None|-?\d+(?:\.\d+)?|'[^']*'|\"[^\"]*\")"


def required_value(self: Constructor, call: Call, failure: Failure, match):
    """The value an error says a parameter, or a config attribute, must have (`requires bias=False`,
    `requires config.normalization='RMSNorm'`), also for a parameter the call leaves to its default."""
    candidates = [call.with_value(name, value) for name, value in
                  re.findall(r"\b(\w+)\s*(?:=|==|must be|should be)\s*" + VALUE + r"(?!\w)", failure.message)
                  if name in self.params and call.kwargs.get(name) != value]
    for holder, attribute, value in re.findall(r"\b(\w+)\.(\w+)\s*(?:=|==)\s*" + VALUE, failure.message):
        attributes = namespace_attributes(call.kwargs.get(holder, ""))
        if attributes is not None and attributes.get(attribute) != value:
            candidates.append(call.with_value(holder, namespace_expression({**attributes, attribute: value})))
    return candidates


def required_type(self: Constructor, call: Call, failure: Failure, match):
    """The kind of value an error says a parameter must be (`requires out_features to be a list`)."""
    found = re.findall(r"\b(\w+)\s+(?:to be|must be|should be)\s+an?\s+(list|tuple|dict|tensor|Tensor|string|str|"
                       r"int|integer|float|bool)", failure.message)
    candidates = []
    for name, kind in found:
        if name not in self.params:
            continue
        guess = self.guess(name)
        size = guess if re.fullmatch(r"\d+", guess) else str(HIDDEN)
        value = {"list": f"[{size}, {size}]", "tuple": f"({size}, {size})", "dict": "{}", "string": "'default'",
                 "str": "'default'", "int": size, "integer": size, "float": "1.0", "bool": "False"}.get(
            kind, tensor_expression((HIDDEN, HIDDEN)))
        candidates.append(call.with_value(name, value))
    return candidates


def dict_for_config(self: Constructor, call: Call, failure: Failure, match):
    """A dict where a config is read with .get() / .keys(): with the keys __init__ reads."""
    return [call.with_value(name, "dict(" + ", ".join(f"{key}={attribute_guess(key)}" for key in
                                                     self.facts.keys(name, "__init__") if key.isidentifier())
                            + ")") for name in self.culprits(call, failure)]


def dict_for_namespace(self: Constructor, call: Call, failure: Failure, match):
    """A dict of the same items where a config object is subscripted."""
    return [call.with_value(name, "dict" + value[len("types.SimpleNamespace"):])
            for name, value in call.kwargs.items() if value.startswith("types.SimpleNamespace(")]


def key_for_dict(self: Constructor, call: Call, failure: Failure, match):
    """The key a dict config lacks, added."""
    return [call.with_value(name, value[:-1] + (", " if value != "dict()" else "")
                            + f"{match.group(1)}={attribute_guess(match.group(1))})")
            for name, value in call.kwargs.items() if value.startswith("dict(")]


def list_for_int(self: Constructor, call: Call, failure: Failure, match):
    """A list where the module iterates or indexes a single value (an int, or a layer it wants several of);
    first for the parameters the failing line iterates or indexes (`dropouts[0]` beside `embed_dim`)."""
    names = self.culprits(call, failure) or list(call.kwargs)
    iterated = set(self.used_in(names, [name for groups in ITERATED.findall(failure.line) for name in groups]))
    return [call.with_value(name, f"[{call.kwargs[name]}, {call.kwargs[name]}]")
            for name in sorted(names, key=lambda name: name not in iterated)
            if re.fullmatch(r"\d+|torch\.nn\.\w+\(.*\)", call.kwargs.get(name, ""))]


# What a line iterates, indexes or unpacks: `x[`, `in x`, `sum(x)` (len, zip, ...), `*x`
ITERATED = re.compile(r"(?:self\.)?(\w+)\s*\[|\bin\s+(?:self\.)?(\w+)|\b(?:sum|len|zip|list|tuple|enumerate|sorted|"
                      r"reversed|max|min|iter)\(\s*(?:self\.)?(\w+)|\*\s*(?:self\.)?(\w+)")


def int_for_list(self: Constructor, call: Call, failure: Failure, match):
    """An item of a list where the module wants one number (a size): the list guessed for the wrong parameter,
    or a list of sizes where one is read (paritybench's list fixors)."""
    return [call.with_value(name, first_item(call.kwargs[name])) for name in self.culprits(call, failure)
            if first_item(call.kwargs.get(name, ""))]


def first_item(expression: str) -> str:
    """`64` of a list or tuple literal `[64, 64]`; "" for anything else."""
    found = re.fullmatch(r"[\[(]\s*(-?\d+(?:\.\d+)?)\s*(?:,.*)?[\])]", expression)
    return found.group(1) if found else ""


def probability_for_dropout(self: Constructor, call: Call, failure: Failure, match):
    """A probability (0.1) where a dropout got a size (`dropouts=16`, or a list of them), as paritybench."""
    got = re.escape(match.group(1))
    names = [name for name in self.culprits(call, failure) + [n for n in call.kwargs if "drop" in n.lower()]
             if re.search(rf"(?<![\w.]){got}(?![\w.])", call.kwargs.get(name, ""))]
    return [call.with_value(name, re.sub(rf"(?<![\w.]){got}(?![\w.])", "0.1", call.kwargs[name]))
            for name in dict.fromkeys(names)]


def activation_taking_inplace(self: Constructor, call: Call, failure: Failure, match):
    """A ReLU where the module makes its activation with `inplace=` (`nolinear(inplace=True)`) and the one given
    takes no such argument."""
    return [call.with_value(name, "torch.nn.ReLU") for name, value in call.kwargs.items()
            if value in ("torch.nn.GELU", "torch.nn.Identity", "torch.nn.SiLU")]


def list_length(self: Constructor, call: Call, failure: Failure, match):
    """A list of the length the module unpacks."""
    want = int(match.group(1))
    return [call.with_value(name, "[" + ", ".join([call.kwargs[name][1:-1].split(",")[0].strip()] * want) + "]")
            for name in self.culprits(call, failure) if call.kwargs.get(name, "").startswith("[")]


def layer_for_value(self: Constructor, call: Call, failure: Failure, match):
    """A layer where a value is called (a class in __init__, an instance in forward) or must be a Module."""
    not_module = failure.search(r"is not a Module subclass|must be an? (?:nn\.)?Module|is not a Module")
    called = set(re.findall(r"(\w+)\s*\(", failure.line))  # the parameter that was called, not its arguments
    names = [name for name in self.culprits(call, failure)
             if {holder.removeprefix("self.") for holder in self.facts.holders(name)} & called] or \
        self.culprits(call, failure)
    in_forward = "forward" in failure.functions  # called per input: an instance; in __init__: a class
    return [call.with_value(name, module_expression(name, instance=bool(not_module) or in_forward))
            for name in names if "torch.nn." not in self.current(call, name)]


def axis_for_size(self: Constructor, call: Call, failure: Failure, match):
    """An axis (-1) for a parameter that is one (`dim`), where a size was given: `Dimension out of range
    (expected to be in range of [-3, 2], but got 64)`, also from forward."""
    return [call.with_value(name, "-1") for name, value in call.kwargs.items() if value == match.group(1)]


def device_string(self: Constructor, call: Call, failure: Failure, match):
    """The build's device where a string given is not one (`device type at start of device string: default`)."""
    return [call.with_value(name, "device") for name, value in call.kwargs.items() if value == repr(match.group(1))]


def permissive_layer(self: Constructor, call: Call, failure: Failure, match):
    """A layer that takes any arguments where the module calls the Identity it was given with more than one
    (`self.mixer(x, inference_params=...)`): a function returning its first argument."""
    layers = {"torch.nn.Identity": PASS_THROUGH_CLASS, "torch.nn.Identity()": PASS_THROUGH}
    return [Call({name: layers.get(value, value) for name, value in call.kwargs.items()}, list(call.args))]


def dtype_for_int(self: Constructor, call: Call, failure: Failure, match):
    """The model's dtype for the parameter the failing line passes as `dtype=`, or one named like a dtype."""
    after_dtype = re.findall(r"dtype\s*=\s*(?:self\.)?(\w+)", failure.line)
    names = [name for name in call.kwargs if name in after_dtype or "dtype" in name]
    return [call.with_value(name, "DTYPE") for name in names if call.kwargs[name] != "DTYPE"]


def divisible(self: Constructor, call: Call, failure: Failure, match):
    """Sizes rounded up to a multiple of what the error names."""
    factor = int(match.group(1))
    candidates = []
    for name in self.culprits(call, failure) or list(call.kwargs):
        value = call.kwargs.get(name, "")
        if re.fullmatch(r"\d+", value) and factor > 1 and int(value) % factor:
            candidates.append(call.with_value(name, str(factor * max(1, -(-int(value) // factor)))))
    return candidates


def other_choice(self: Constructor, call: Call, failure: Failure, match):
    """Another string for a string parameter the module refused (KeyError, unknown, unsupported, ...), or for
    one it got None for and names in the error: those the error offers, the module compares it with, common
    ones."""
    strings = {name: value for name, value in call.kwargs.items() if re.fullmatch(r"'[^']*'", value)
               or (value == "None" and re.search(rf"\b{re.escape(name)}\b", failure.message))}
    offered = re.findall(r"'([\w.-]+)'", OFFERED.split(failure.message, 1)[-1]) if OFFERED.search(failure.message) \
        else []
    candidates = []
    for name in self.culprits(call, failure) or list(strings):
        if name in strings:
            for choice in [*offered, *self.facts.choices(name), *COMMON_CHOICES]:
                candidates.append(call.with_value(name, repr(choice)))
    return candidates


def nonzero(self: Constructor, call: Call, failure: Failure, match):
    """A positive value where a zero was given (0.5 for a 1.0 that must lie between 0 and 1)."""
    fixes = {"0": "1", "0.0": "0.1", "1.0": "0.5"} if failure.search("between 0 and 1") else {"0": "1", "0.0": "0.1"}
    return [call.with_value(name, fixes[call.kwargs[name]]) for name in self.culprits(call, failure) or
            list(call.kwargs) if call.kwargs.get(name) in fixes]


def integer_for_float(self: Constructor, call: Call, failure: Failure, match):
    """An int where a float was given."""
    return [call.with_value(name, str(max(1, int(float(call.kwargs[name]))) if float(call.kwargs[name]) >= 1
                                      else 4))
            for name in self.culprits(call, failure) or list(call.kwargs)
            if re.fullmatch(r"\d+\.\d*(e-?\d+)?", call.kwargs.get(name, ""))]


def other_sizes(self: Constructor, call: Call, failure: Failure, match):
    """Other sizes for the integer parameters of a failing assertion or size check (a relation between sizes:
    heads dividing the hidden size, in/out features, a size a table has no entry for: `KeyError: 4`), each in
    turn through SIZE_LADDER, then all equal."""
    names = [name for name in self.culprits(call, failure) if re.fullmatch(r"\d+", call.kwargs.get(name, ""))]
    missing_key = failure.search(r"^KeyError: (\d+)$")
    if missing_key:
        names += [name for name, value in call.kwargs.items() if value == missing_key.group(1)]
    names = list(dict.fromkeys(names))
    candidates = [call.with_value(name, size) for name in names for size in SIZE_LADDER]
    for size in SIZE_LADDER:
        candidates.append(Call({**call.kwargs, **{name: size for name in names}}, list(call.args)))
    return candidates


def by_name_again(self: Constructor, call: Call, failure: Failure, match):
    """Last resort: each parameter back to its plain name rule (a usage's value may not suit this module)."""
    return [call.with_value(name, by_name(name)) for name in self.culprits(call, failure)
            if by_name(name) and by_name(name) != call.kwargs.get(name)]


PASS_THROUGH_CLASS = f"lambda *args, **kwargs: ({PASS_THROUGH})"


# ------------------------------------------------------------------------------------------ namespaces


def namespace_attributes(expression: str) -> Optional[dict]:
    """{attribute: expression} of a `types.SimpleNamespace(...)` guess; None for anything else."""
    if not expression.startswith("types.SimpleNamespace("):
        return None
    try:
        call = ast.parse(expression, mode="eval").body
    except SyntaxError:
        return None
    return {kw.arg: ast.unparse(kw.value) for kw in call.keywords if kw.arg}
