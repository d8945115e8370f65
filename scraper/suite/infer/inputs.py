"""Inputs of a scraped nn.Module's forward, found by trial in eager mode (paritybench's search)."""

from __future__ import annotations

import re

from scraper.suite.infer.construct import required_params
from scraper.suite.phases import describe

# paritybench-style guesses, tried in order: the first that runs in eager mode wins.
INPUT_SHAPE_CANDIDATES = [(4, 3, 64, 64), (4, 4), (4, 16), (4, 4, 4, 4), (4, 4, 4), (4, 64), (4, 3, 32, 32),
                          (4, 1, 28, 28), (4, 16, 16), (4, 64, 16, 16), (4, 3, 224, 224), (4, 8, 32),
                          (4, 1, 64, 64), (4, 16, 64)]
MAX_INPUT_TRIALS = 40


def infer_input_shapes(model, device: str, dtype) -> list[list[int]]:
    """The first shape that the model's forward accepts in eager mode, one tensor per required positional
    argument (paritybench's trial): the candidates in order, plus shapes suggested by the errors (a Linear's
    in_features, a convolution's channels). Returns a list of shapes."""
    import torch

    forward = model.forward.__func__ if hasattr(model.forward, "__func__") else model.forward
    count = max(1, len(required_params(forward)))
    candidates, tried, errors = list(INPUT_SHAPE_CANDIDATES), set(), []
    while candidates and len(tried) < MAX_INPUT_TRIALS:
        shape = tuple(candidates.pop(0))
        if shape in tried:
            continue
        tried.add(shape)
        try:
            with torch.no_grad():
                output = model(*(torch.rand(shape, device=device, dtype=dtype) for _ in range(count)))
        except Exception as exc:
            errors.append(f"{shape}: {describe(exc)}")
            candidates[:0] = suggested_shapes(shape, str(exc))  # try what the error asks for next
            continue
        if any(True for _ in all_tensors(output)):
            return [list(shape)] * count
        errors.append(f"{shape}: output has no tensor")
    raise RuntimeError(f"no input shape worked for {count} input(s) after {len(tried)} tries; "
                       f"last: {errors[-1][:300]}")


def suggested_shapes(shape: tuple, message: str) -> list[tuple]:
    """Shapes an error message points to: `mat1 and mat2 shapes cannot be multiplied (AxB and CxD)` -> last
    dimension C; `expected input[...] to have C channels` -> C channels."""
    found = []
    matmul = re.search(r"cannot be multiplied \((\d+)x(\d+) and (\d+)x(\d+)\)", message)
    if matmul:
        features = int(matmul.group(3))
        found += [shape[:-1] + (features,), (4, features)]
    channels = re.search(r"to have (\d+) channels", message)
    if channels and len(shape) >= 2:
        found += [(shape[0], int(channels.group(1))) + shape[2:]]
    groups = re.search(r"divisible by num_groups.*?num_groups=(\d+)", message)
    if groups and len(shape) >= 2:
        found += [(shape[0], 2 * int(groups.group(1))) + shape[2:]]
    return found


def all_tensors(value):
    """Every tensor inside nested containers."""
    import torch

    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from all_tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from all_tensors(item)
