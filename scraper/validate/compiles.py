"""The `compiles` level, run inside the sandboxed child: `triton.compile` for a known signature, on the CPU.

The module is executed with the real `@triton.jit` (TRITON_INTERPRET off), then
`triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", 90, 32))` lowers it through
TTIR, TTGIR, LLVM IR and PTX. The last stage (ptxas -> cubin) is replaced by an empty stub: it would need a
subprocess for each kernel and adds nothing the PTX stage has not already checked about the source.

Block-size constexprs (XBLOCK, YBLOCK, R0_BLOCK, ...) are chosen, in this order, from
  1. Inductor's own heuristics: the removed `@triton_heuristics.pointwise/reduction/persistent_reduction(...)`
     decorator text (launch["decorator"]) evaluated with `return_configs=True`, first config;
  2. configs written in the decorator (launch["configs"], user_autotune) or the template's num_warps/num_stages;
  3. size_hints: next power of two of the hint, capped (see `block_from_size_hints`).
Which one was used is recorded (`config_source`, `config`).
"""

from __future__ import annotations

import ast
import os
import re

from scraper.validate.imports import MODULE_FILE, find_kernel, load_module
from scraper.validate.confine import describe_error

TARGET = ("cuda", 90, 32)
HEURISTICS_WITH_CONFIGS = ("pointwise", "reduction", "persistent_reduction")
# Caps for the size_hints fallback: a 1-D pointwise block of 1024, smaller tiles when there are more dimensions.
BLOCK_CAPS = {"x": 1024, "y": 32, "z": 16, "r0_": 1024, "r1_": 64}


def target_text() -> str:
    """The target as recorded: "cuda:90:32" (backend, compute capability, warp size)."""
    return ":".join(str(part) for part in TARGET)


def skip_cubin_hook(*args):
    """knobs.runtime.add_stages_inspection_hook: with no arguments it names itself for the cache key; with the
    add_stages arguments it swaps the ptxas stage for a stub."""
    if not args:
        return "validate-ptx-only", "validate-ptx-only"
    stages = args[1]
    stages["cubin"] = lambda src, metadata: b""
    return None


def install_compile_hooks() -> None:
    """Set the knobs compile needs (in the worker, before any fork)."""
    from triton import knobs

    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Inductor compiles with enable_fp_fusion=True
    knobs.runtime.add_stages_inspection_hook = skip_cubin_hook


def parse_attrs(configs) -> dict:
    """triton_meta["configs"][0] ({(0,): [["tt.divisibility", 16]], ...}) with keys as tuples; keys may arrive as
    tuples, as strings "(0,)" (after JSON) or as lists."""
    if not configs:
        return {}
    first = configs[0] if isinstance(configs, list) else configs
    attrs = {}
    for key, value in (first or {}).items():
        if isinstance(key, str):
            key = ast.literal_eval(key)
        attrs[tuple(key) if isinstance(key, (list, tuple)) else (key,)] = value
    return attrs


def _config_dict(config) -> dict:
    return {**dict(config.kwargs), "num_warps": config.num_warps, "num_stages": config.num_stages}


def heuristic_configs(launch: dict, module_file: str) -> list:
    """Evaluate the removed Inductor decorator with return_configs=True; [] when it is not one that can."""
    decorator = (launch.get("decorator") or "").strip().lstrip("@")
    if launch.get("heuristic") not in HEURISTICS_WITH_CONFIGS or not decorator:
        return []
    from torch._inductor.runtime import hints, triton_heuristics

    call = ast.parse(decorator, mode="eval").body
    if not isinstance(call, ast.Call):
        return []
    call.keywords = [kw for kw in call.keywords if kw.arg != "return_configs"]
    call.keywords.append(ast.keyword("return_configs", ast.Constant(True)))
    namespace = {"triton_heuristics": triton_heuristics, "__file__": module_file,
                 **{name: getattr(hints, name) for name in ("DeviceProperties", "TileHint", "ReductionHint",
                                                           "AutotuneHint") if hasattr(hints, name)}}
    expression = ast.fix_missing_locations(ast.Expression(call))
    return list(eval(compile(expression, "<decorator>", "eval"), namespace))  # noqa: S307 - in the sandbox


def block_from_size_hints(name: str, size_hints: dict) -> int | None:
    """XBLOCK -> size_hints["x"], R0_BLOCK -> size_hints["r0_"]: next power of two, capped (BLOCK_CAPS)."""
    prefix = name[: -len("BLOCK")].lower()
    for key in (prefix, prefix + "_", prefix.rstrip("_")):
        if key in size_hints:
            hint = max(1, int(size_hints[key]))
            cap = BLOCK_CAPS.get(key, 64)
            if key == "x" and any(k.startswith("r") for k in size_hints):
                cap = 8  # reductions keep few rows per program
            return min(1 << (hint - 1).bit_length(), cap)
    return None


def choose_config(job: dict, module_file: str) -> tuple[dict, dict, dict]:
    """(constexpr values, compile options, record of the choice) for the job's kernel."""
    launch = job.get("launch") or {}
    constexprs = dict(job.get("constants") or {})
    options: dict = {}
    info: dict = {"config_source": "constants"}
    configs = heuristic_configs(launch, module_file)
    if configs:
        chosen = _config_dict(configs[0])
        info = {"config_source": "inductor_heuristics", "configs_available": len(configs)}
    elif launch.get("configs"):
        first = launch["configs"][0]
        chosen = {**(first.get("kwargs") or {}), **{k: first[k] for k in ("num_warps", "num_stages") if k in first}}
        info = {"config_source": "launch_configs", "configs_available": len(launch["configs"])}
    elif "num_warps" in launch or "num_stages" in launch:
        chosen = {k: launch[k] for k in ("num_warps", "num_stages") if k in launch}
        info = {"config_source": "decorator"}
    else:
        chosen = {}
    for key in ("num_warps", "num_stages"):
        if key in chosen:
            options[key] = chosen.pop(key)
    constexprs.update(chosen)
    missing = [n for n, t in (job.get("signature") or {}).items() if t == "constexpr" and n not in constexprs]
    for name in missing:
        value = block_from_size_hints(name, launch.get("size_hints") or {}) if name.endswith("BLOCK") else None
        if value is not None:
            constexprs[name] = value
            info["config_source"] = "size_hints"
    info["config"] = {**constexprs, **options}
    return constexprs, options, info


def compile_kernel(fn, job: dict, constexprs: dict, options: dict):
    """triton.compile for the job's signature on the fixed target; returns the CompiledKernel."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = dict(job["signature"])
    for name in constexprs:
        if name in fn.arg_names:
            signature.setdefault(name, "constexpr")
    missing = [n for n, t in signature.items() if t == "constexpr" and n not in constexprs]
    if missing:
        raise ValueError(f"no value for constexpr {', '.join(missing)}")
    attrs = parse_attrs(((job.get("launch") or {}).get("triton_meta") or {}).get("configs"))
    source = ASTSource(fn, signature, {k: v for k, v in constexprs.items() if k in fn.arg_names}, attrs)
    return triton.compile(source, target=GPUTarget(*TARGET), options=options)


def check_compiles(job: dict, scratch: str) -> dict:
    """Execute the module with the real @triton.jit and compile job["name"] to PTX."""
    import triton

    os.environ.pop("TRITON_INTERPRET", None)
    path = os.path.join(scratch, MODULE_FILE)
    info: dict = {"triton": triton.__version__, "target": target_text()}
    try:
        fn, _ = find_kernel(load_module(path), job["name"])
        constexprs, options, choice = choose_config(job, path)
        info.update(choice)
        compiled = compile_kernel(fn, job, constexprs, options)
    except BaseException as exc:  # noqa: BLE001
        return {"ok": False, **info, **describe_error(exc, path)}
    stages = [s for s in compiled.asm if s not in ("source", "cubin")]
    ptx = compiled.asm.get("ptx", "")
    target = re.search(r"^\.target\s+(\S+)", ptx, re.MULTILINE)
    return {"ok": True, **info, "stages": stages, "ptx_lines": ptx.count("\n"),
            "ptx_target": target.group(1) if target else None}
