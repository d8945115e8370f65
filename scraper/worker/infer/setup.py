"""Statements a scraped module needs run before its forward, found from its errors (scraper.worker.infer.inputs
repairs), tried in the worker and written into the program's build() as they are:

    single_process_group()                            # "Default process group has not been initialized"
    with torch.device(device): model.setup_caches(max_batch_size=2, max_seq_length=256)
                                                      # "Caches must be initialized first"

A module written for sequence parallelism (Ulysses, ring attention) calls collectives; with one rank an
all-to-all or all-gather gives back its input, so the module computes what it would on one GPU. The process
group lives in a file store under the temporary folder: no network, no port. The helper's source is
PROCESS_GROUP_HELPER, executed in the worker and copied into the program that uses it (one text, both places).
"""

from __future__ import annotations

import inspect
import re
from typing import Optional

from scraper.worker.infer.values import BATCH, MAX_LEN

PROCESS_GROUP_CALL = "single_process_group()"
PROCESS_GROUP_HELPER = '''

def single_process_group():
    """torch.distributed with this process as its only rank (a file store: no network), once."""
    import os
    import tempfile

    import torch.distributed as dist

    if dist.is_available() and not dist.is_initialized():
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # no hostname lookup inside a sandbox
        os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")
        handle, store = tempfile.mkstemp(prefix="process-group-")
        os.close(handle)
        gpu = torch.cuda.is_available() and dist.is_nccl_available()
        dist.init_process_group("cpu:gloo,cuda:nccl" if gpu else "gloo", init_method=f"file://{store}", rank=0,
                                world_size=1)
'''
CACHES_NOT_SET_UP = (r"[Cc]aches?\b.{0,40}\b(initiali[sz]|set ?up|setup|allocat)|"
                     r"(initiali[sz]e|set ?up|setup|allocate)\w*.{0,40}\b[Cc]aches?\b")
CACHE_METHOD = re.compile(r"_?(setup|set_up|init|initialize|allocate|create|build|reset)_(kv_)?caches?")
BATCH_NAME = re.compile(r".*batch.*|bsz|bs")
LENGTH_NAME = re.compile(r".*(seq|len|length|tokens|positions?|ctx|context).*")


def cache_calls(model) -> list[str]:
    """`model.<method>(...)` for each cache set-up method of the model whose required parameters are all a batch
    size or a sequence length (given as BATCH and MAX_LEN, by keyword)."""
    calls = []
    for name in dir(type(model)):
        method = getattr(type(model), name, None)
        if CACHE_METHOD.fullmatch(name) and callable(method):
            arguments = cache_arguments(method)
            if arguments is not None:
                # under the build's device, as gpt-fast's generate.py does: the caches are made on the default device
                calls.append(f"with torch.device(device): model.{name}({arguments})")
    return calls


def cache_arguments(method) -> Optional[str]:
    """The keyword arguments of a set-up method, or None when it has a required parameter of another kind."""
    try:
        params = list(inspect.signature(method).parameters.values())[1:]  # without self
    except (TypeError, ValueError):
        return None
    given = []
    for param in params:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or param.default is not param.empty:
            continue
        if BATCH_NAME.fullmatch(param.name.lower()):
            given.append(f"{param.name}={BATCH}")
        elif LENGTH_NAME.fullmatch(param.name.lower()):
            given.append(f"{param.name}={MAX_LEN}")
        else:
            return None
    return ", ".join(given)


def carried(prepare: tuple) -> tuple:
    """`prepare` with the process group first when one is up in this worker: an earlier trial set it up and a
    later one (of a rebuilt model, which starts its own search) succeeded with it; the program must too. The
    worker starts each module without one (scraper.worker.serve.reset)."""
    import torch.distributed as dist

    if PROCESS_GROUP_CALL in prepare or not (dist.is_available() and dist.is_initialized()):
        return prepare
    return (PROCESS_GROUP_CALL, *prepare)


def helpers_for(statements) -> str:
    """The helper definitions `statements` call (the program copies them before its build())."""
    return PROCESS_GROUP_HELPER if PROCESS_GROUP_CALL in statements else ""
