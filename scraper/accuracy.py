"""Is the compiled model right? Its outputs against eager, as PyTorch's benchmark runner does with `--accuracy`.

The worker runs the model eagerly on a copy made before compiling (same weights, same inputs) and, where the
model allows, once more in float64 (a copy cast to float64, float inputs cast too) as the reference of
references. `compare` then judges each output tensor in the style of `torch._dynamo.utils.same`:

  * integer and bool tensors must be equal;
  * float tensors pass when `allclose(eager, compiled, rtol=tol, atol=tol)`; failing that, when a float64 result
    exists, when the compiled result is not much further from it than eager is:
    rmse(fp64, compiled) <= multiplier * rmse(fp64, eager) + tol / 10 (multiplier 3 for float16/bfloat16, else 2).

In training the loss and every parameter's gradient are compared too. Tolerances per dtype and mode are in
TOLERANCE. The result is recorded in the manifest as `accuracy` ("pass" | "fail" | "skipped"), `max_error`
(largest absolute difference compiled vs eager over the compared tensors) and the evidence under
`accuracy_detail`.

Nothing here imports torch at module level: the orchestrator imports this package without it.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

# (mode, dtype) -> rtol = atol. PyTorch's runner uses 1e-3..1e-2 for float32 models and looser ones in training
# and for half precision; gradients accumulate more rounding than outputs.
TOLERANCE = {
    ("inference", "float32"): 1e-3, ("inference", "bfloat16"): 1e-2, ("inference", "float16"): 1e-2,
    ("training", "float32"): 1e-2, ("training", "bfloat16"): 4e-2, ("training", "float16"): 4e-2,
}
PASS, FAIL, SKIPPED = "pass", "fail", "skipped"


def tolerance_for(mode: str, dtype: str) -> float:
    """rtol = atol for a model run in `mode` (inference | training) with parameters of `dtype`."""
    return TOLERANCE.get((mode, dtype), 1e-2)


@dataclass
class Comparison:
    """The verdict over every compared tensor: ok, the largest absolute error, and what failed first."""

    ok: bool = True
    max_error: float = 0.0
    compared: int = 0
    failures: list = field(default_factory=list)  # "name: why" for the first few tensors that failed

    def fail(self, name: str, why: str) -> None:
        self.ok = False
        if len(self.failures) < 5:
            self.failures.append(f"{name}: {why}")


def flat_tensors(value) -> list:
    """Every tensor inside a model's output, in a stable order: a tensor; the items of lists and tuples; the
    values of dicts, of Hugging Face ModelOutputs (`to_tuple()`, which leaves out the None fields), of dataclasses
    and of SimpleNamespaces; anything else (None, numbers, strings) contributes nothing. The problems' Model
    returns exactly these."""
    import dataclasses
    import types

    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if hasattr(value, "to_tuple"):
        value = value.to_tuple()
    elif isinstance(value, dict):
        value = list(value.values())
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = [getattr(value, f.name) for f in dataclasses.fields(value)]
    elif isinstance(value, types.SimpleNamespace):
        value = list(vars(value).values())
    if isinstance(value, (list, tuple)):
        return [tensor for item in value for tensor in flat_tensors(item)]
    return []


def rmse(reference, result) -> float:
    """Root mean square error of `result` against `reference`, in float64, NaNs where both are NaN ignored."""
    import torch

    reference, result = reference.double(), result.double()
    both_nan = torch.isnan(reference) & torch.isnan(result)
    difference = torch.where(both_nan, torch.zeros_like(reference), reference - result)
    return math.sqrt(torch.mean(difference * difference).item()) if difference.numel() else 0.0


def max_abs_error(reference, result) -> float:
    """Largest |reference - result| (NaN in both places counts as equal; NaN in one as infinite)."""
    import torch

    if reference.numel() == 0:
        return 0.0
    reference, result = reference.double(), result.double()
    both_nan = torch.isnan(reference) & torch.isnan(result)
    difference = torch.where(both_nan, torch.zeros_like(reference), (reference - result).abs())
    return float(torch.nan_to_num(difference, nan=math.inf).max().item())


def compare_tensor(name: str, eager, result, fp64, tol: float, verdict: Comparison) -> None:
    """Judge one tensor of the compiled run (`result`) against eager (and the float64 run, when given)."""
    import torch

    verdict.compared += 1
    if tuple(eager.shape) != tuple(result.shape):
        verdict.fail(name, f"shape {tuple(result.shape)} != eager {tuple(eager.shape)}")
        return
    eager, result = eager.detach().cpu(), result.detach().cpu()
    if not eager.is_floating_point():
        if not torch.equal(eager, result.to(eager.dtype)):
            verdict.fail(name, "integer/bool values differ")
        return
    error = max_abs_error(eager, result)
    verdict.max_error = max(verdict.max_error, error)
    if torch.allclose(eager.double(), result.double(), rtol=tol, atol=tol, equal_nan=True):
        return
    if fp64 is None:
        verdict.fail(name, f"max error {error:.3g} > tolerance {tol:g} (no float64 reference)")
        return
    fp64 = fp64.detach().cpu()
    multiplier = 3.0 if result.dtype in (torch.float16, torch.bfloat16) else 2.0
    eager_error, result_error = rmse(fp64, eager), rmse(fp64, result)
    if not result_error <= multiplier * eager_error + tol / 10.0:
        verdict.fail(name, f"rmse vs float64 {result_error:.3g} > {multiplier:g} x eager's {eager_error:.3g} "
                           f"+ {tol / 10.0:g} (max error {error:.3g})")


def compare(eager: dict, result: dict, fp64: Optional[dict], tol: float) -> Comparison:
    """Compare named tensors of the compiled run with eager's (and float64's, by the same names)."""
    verdict = Comparison()
    for name, reference in eager.items():
        if name not in result:
            verdict.fail(name, "missing from the compiled run")
            continue
        compare_tensor(name, reference, result[name], (fp64 or {}).get(name), tol, verdict)
    for name in result.keys() - eager.keys():
        verdict.fail(name, "not in the eager run")
    return verdict


# ------------------------------------------------------------------------------------------------ the runs


def run_once(model, args: tuple, kwargs: dict, training: bool, loss_of: Callable, named_from=None,
             grad: bool = False) -> tuple:
    """Run `model` once as the suite does (inference under no_grad, or with autograd on for the few models whose
    forward takes gradients itself, `grad`; training forward + backward). Returns (its output, its named
    tensors: output[i], in training also loss and grad:<name> of the parameters of `named_from`, default
    `model`; a compiled module's parameters are its original's)."""
    import torch

    if not training:
        with torch.enable_grad() if grad else torch.no_grad():
            output = model(*args, **kwargs)
        return output, named_outputs(output)
    output = model(*args, **kwargs)
    loss = loss_of(output)
    loss.backward()
    return output, {**named_outputs(output), "loss": loss.detach(), **gradients(named_from or model)}


def named_outputs(output) -> dict:
    """{"output[i]": tensor} over flat_tensors(output)."""
    return {f"output[{index}]": tensor.detach() for index, tensor in enumerate(flat_tensors(output))}


def gradients(model) -> dict:
    """{"grad:<name>": gradient} of every parameter that received one."""
    return {f"grad:{name}": p.grad.detach() for name, p in model.named_parameters() if p.grad is not None}


def to_float64(value: Any) -> Any:
    """Float tensors inside args/kwargs cast to float64 (integer tensors and everything else unchanged)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.double() if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(to_float64(item) for item in value)
    if isinstance(value, dict):
        return {key: to_float64(item) for key, item in value.items()}
    return value


def float64_run(copy_for_fp64, args, kwargs, training, loss_of, grad: bool = False) -> Optional[dict]:
    """The float64 reference, or None when the model does not run in float64 (an op without a float64 kernel,
    a dtype hard-coded inside the model, ...)."""
    try:
        model = copy_for_fp64.double()
        with in_float64():
            return run_once(model, to_float64(args), to_float64(kwargs), training, loss_of, grad=grad)[1]
    except Exception:  # the reference is optional: without it the plain tolerance decides
        return None


# Fused attention kernels have no float64 version (an FX graph calls them by name): the float64 run computes
# them as PyTorch's math attention, which is what they approximate.
FUSED_ATTENTION = ("_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention",
                   "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu")


def in_float64():
    """A dispatch mode for the float64 run of graphs written for float32: float32 given as a dtype (casts,
    `full`, `arange` in an FX graph) becomes float64, and fused attention runs as math attention."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_map

    def promote(value):
        return torch.float64 if value is torch.float32 else value

    class Float64(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            args, kwargs = tree_map(promote, args), tree_map(promote, kwargs or {})
            if func.__name__.split(".")[0] in FUSED_ATTENTION:
                return math_attention(func, args, kwargs)
            return func(*args, **kwargs)

    return Float64()


def math_attention(func, args, kwargs):
    """A fused attention op's outputs from math attention: the attention output, then empty tensors for its
    other results (log-sum-exp, RNG state: nothing an inference graph reads)."""
    import torch

    arguments = func._schema.arguments
    bound = {argument.name: argument.default_value for argument in arguments if argument.has_default_value()}
    bound.update(zip((argument.name for argument in arguments), args))
    bound.update(kwargs)
    if bound.get("dropout_p"):  # random: math attention would be another computation; no reference then
        raise NotImplementedError(f"{func.__name__} with dropout has no float64 stand-in")
    query, key, mask = bound["query"], bound["key"], bound.get("attn_bias", bound.get("attn_mask"))
    causal = bool(bound.get("is_causal"))
    if causal and mask is not None:  # math attention takes one or the other: the causal mask joins the bias
        allowed = torch.ones(query.shape[-2], key.shape[-2], dtype=torch.bool, device=query.device).tril()
        mask, causal = mask.masked_fill(~allowed, float("-inf")), False
    output = torch.ops.aten._scaled_dot_product_attention_math(query, key, bound["value"], mask, 0.0, causal,
                                                                 scale=bound.get("scale"))[0]
    # laid out as the fused kernels write it ((batch, seq, heads, dim) memory): the graph's views rely on it
    output = output.transpose(1, 2).contiguous().transpose(1, 2)
    return (output, *(torch.empty(0, device=output.device) for _ in func._schema.returns[1:]))


def seeded(run: Callable[[], Any], seed: int = 0) -> Any:
    """`run()` with the same RNG state every time, so eager and compiled draw the same random numbers."""
    import torch

    torch.manual_seed(seed)
    return run()


def copies_for_accuracy(model) -> tuple[Any, Any]:
    """(eager copy, copy for the float64 run), made before the compiled run changes the model (batch-norm
    statistics, gradients). Raises when the model cannot be deep-copied."""
    return copy.deepcopy(model), copy.deepcopy(model)


def verdict_fields(verdict: Comparison, tol: float, fp64_used: bool) -> dict:
    """The manifest fields of a finished comparison."""
    return {"accuracy": PASS if verdict.ok else FAIL, "max_error": verdict.max_error,
            "accuracy_detail": {"tolerance": tol, "compared": verdict.compared, "float64_reference": fp64_used,
                                "failures": verdict.failures}}


def skipped(reason: str) -> dict:
    """The manifest fields of an accuracy check that did not run."""
    return {"accuracy": SKIPPED, "max_error": None, "accuracy_detail": {"reason": reason}}
