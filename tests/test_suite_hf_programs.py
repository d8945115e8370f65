"""The Hugging Face program with the real transformers library (pinned in requirements-dev.txt): models whose
inputs need care run eagerly on the CPU as the program builds them."""
import subprocess
import sys

import pytest

from scraper.worker import programs

pytest.importorskip("transformers")

RUN = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("program", sys.argv[1])
program = importlib.util.module_from_spec(spec)
spec.loader.exec_module(program)
model, args, kwargs = program.build("cpu")
model(*args, **kwargs)
print(kwargs["input_ids"].shape[1])
"""


@pytest.mark.parametrize("name", ["RobertaForCausalLM", "CamembertForMaskedLM"])
def test_roberta_style_positions_fit_the_position_table(tmp_path, name):
    # RoBERTa counts positions from padding_idx + 1, so 512 tokens overran its 512 positions: on the H200 a
    # device-side assert, then a cuBLAS error in every later model of that worker
    path = tmp_path / "program.py"
    path.write_text(programs.huggingface_program(name, 1, "float32", False, seq_len=512, max_layers=1))
    done = subprocess.run([sys.executable, "-c", RUN, str(path)], capture_output=True, text=True, timeout=300,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "510"  # 512 positions - padding_idx 1 - 1
