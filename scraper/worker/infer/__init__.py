"""--suite modules, worker side: build a scraped nn.Module and find inputs its forward accepts.

    program.py    the module's program: execute its closure, construct it, infer its inputs (module_program)
    construct.py  constructor arguments: starts and repairs
    inputs.py     forward inputs: roles, layouts and repairs
    repairs.py    the repair table: which failure calls for which change of a constructor call or of inputs
    values.py     a parameter's value from its type hint, name and what the source does with it
    source.py     what the closure's source says (config attributes read, strings compared, keys indexed)
    errors.py     a failed trial as the repairs read it

Everything here runs in the worker process (it executes scraped code); the orchestrator never imports it. The
worker imports `scraper.worker.infer.program` itself: the sandbox ships the modules a worker imports, followed
file by file, and a package's __init__ is not one of them.
"""
