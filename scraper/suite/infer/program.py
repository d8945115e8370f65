"""The program of one scraped module: its closure executed, the class constructed, inputs inferred."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from scraper.suite import programs
from scraper.suite.infer.construct import instantiate
from scraper.suite.infer.inputs import infer_input_shapes
from scraper.suite.phases import PhaseError, phase


def module_program(args: argparse.Namespace, device: str, training: bool) -> tuple[str, dict]:
    """Load a scraped module's source, infer constructor arguments and inputs by trial, and return its program
    (the source plus a build() holding what was inferred)."""
    import torch

    if not args.source or not args.class_name:
        raise PhaseError("program", "--suite modules needs --source and --class-name")
    source = Path(args.source).read_text(encoding="utf-8")
    namespace = phase("import", lambda: exec_source(source, args.source))
    cls = namespace.get(args.class_name)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise PhaseError("import", f"{args.class_name} is not an nn.Module class of {args.source}")
    dtype = getattr(torch, args.dtype)
    model, init_args, init_kwargs = phase("init", lambda: instantiate(cls))
    model = model.to(device=device, dtype=dtype).eval()
    shapes = phase("inputs", lambda: infer_input_shapes(model, device, dtype))
    text = programs.module_program(source, args.class_name, init_args, init_kwargs, shapes, args.dtype, training)
    return text, {"init_args": init_args, "init_kwargs": init_kwargs, "input_shapes": shapes}


def exec_source(source: str, filename: str) -> dict:
    """Execute module source in a fresh namespace (this worker process only)."""
    namespace: dict[str, Any] = {"__name__": "suite_module", "__file__": filename}
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - scraped code, isolated worker process
    return namespace
