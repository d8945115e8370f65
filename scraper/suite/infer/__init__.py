"""--suite modules, worker side: build a scraped nn.Module and find inputs its forward accepts.

    program.py    the module's program: execute its closure, construct it, infer its inputs (module_program)
    construct.py  constructor arguments
    inputs.py     forward inputs

Everything here runs in the worker process (it executes scraped code); the orchestrator never imports it.
"""

from scraper.suite.infer.program import module_program

__all__ = ["module_program"]
