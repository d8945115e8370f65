"""The wall around scraped code, shared by every stage that runs it (validate's imports/compiles workers, the
suite's --suite modules worker): a bubblewrap sandbox per worker process (wall.py), the first code run inside it
(inside.py), and what may cross it: the worker's environment and its cleaned answers (secrets.py).

    require_wall(unsafe_no_sandbox) -> bool     # SandboxUnavailable (with what to do) when bwrap cannot run
    launch(wall, command, env=..., binds=..., files=..., devices=..., **popen) -> Walled   # .kill() ends it all
    worker_environment() -> dict                # the allow-list sandboxed code gets (HOME=/tmp, no host paths)
    trusted_environment() -> dict               # os.environ without secret-looking variables (installed code)
    clean_result(result) -> result              # valid UTF-8, finite numbers, strings capped, secrets and
                                                # withheld values replaced by [redacted]
    private_folder(parent), take_out(folder)    # a host folder a sandbox writes into; made safe afterwards
"""

from scraper.sandbox.folders import private_folder, take_out
from scraper.sandbox.secrets import clean_result, scrub, trusted_environment, worker_environment
from scraper.sandbox.wall import SandboxUnavailable, Wall, Walled, gpu_devices, launch, require_wall

__all__ = ["SandboxUnavailable", "Wall", "Walled", "clean_result", "gpu_devices", "launch", "private_folder",
           "require_wall", "scrub", "take_out", "trusted_environment", "worker_environment"]
