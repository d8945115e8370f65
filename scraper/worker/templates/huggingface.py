"""${name} from transformers, built from its config class (random weights, nothing downloaded), as compiled
by run_inductor_suite.py (${mode}, ${dtype}; at most ${max_layers} layers per stack, 0 = the config's own).

Run: python ${file}  (eager)  or  python ${file} --compile
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import transformers

# --- set by the suite (scraper/worker/programs.py renders these lines) ---
MODEL = "BertForMaskedLM"
BATCH_SIZE = 8
SEQ_LEN = 512
MAX_LAYERS = 2
DTYPE = torch.float32
TRAINING = False
# --- end of the suite's settings ---
LAYER_KEYS = ("num_hidden_layers", "num_layers", "n_layer", "encoder_layers", "decoder_layers", "num_decoder_layers")


def make_config(model_cls):
    """The config class's defaults, fewer layers, no KV cache, a pad token (batches > 1 need one)."""
    config = model_cls.config_class()
    for key in LAYER_KEYS:
        value = getattr(config, key, None)
        if MAX_LAYERS and isinstance(value, int) and value > MAX_LAYERS:
            setattr(config, key, MAX_LAYERS)
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = 0
    config.use_cache = False
    return config


def make_inputs(model, config, device):
    """Random inputs as PyTorch's benchmarks/dynamo/huggingface.py makes them (labels only when training)."""
    batch = BATCH_SIZE
    if model.main_input_name == "pixel_values":
        size = config.image_size
        return {"pixel_values": torch.randn(batch, config.num_channels, size, size, device=device, dtype=DTYPE)}
    limit = getattr(config, "max_position_embeddings", None)  # XLNet says -1: no limit
    seq_len = min(SEQ_LEN, limit) if isinstance(limit, int) and limit > 0 else SEQ_LEN
    # RoBERTa-style embeddings count positions from padding_idx + 1: 512 tokens would index position 513 of 512
    # (a device-side assert on the GPU, an IndexError on the CPU)
    offset = getattr(getattr(getattr(model, "base_model", model), "embeddings", None), "padding_idx", None)
    if isinstance(offset, int) and isinstance(limit, int) and limit > 0:
        seq_len = min(seq_len, limit - offset - 1)
    ids = torch.randint(0, config.vocab_size, (batch, seq_len), device=device)
    if "Bart" in MODEL and config.eos_token_id is not None:
        ids[:, -1] = config.eos_token_id
    inputs = {"input_ids": ids}
    if getattr(config, "is_encoder_decoder", False):
        inputs["decoder_input_ids"] = ids
    if TRAINING:
        inputs.update(make_labels(config, batch, seq_len, device))
    return inputs


def make_labels(config, batch, seq_len, device):
    """The loss arguments of the model's head, so that training computes the model's own loss."""
    if MODEL.endswith("QuestionAnswering"):
        return {key: torch.randint(0, seq_len, (batch,), device=device) for key in ("start_positions", "end_positions")}
    if MODEL.endswith(("SequenceClassification", "ImageClassification")):
        return {"labels": torch.randint(0, max(config.num_labels - 1, 1), (batch,), device=device)}
    if MODEL.endswith(("MaskedLM", "HeadModel", "CausalLM", "ConditionalGeneration")):
        return {"labels": torch.randint(0, config.vocab_size - 1, (batch, seq_len), device=device)}
    return {}


def build(device="cuda"):
    """The model (random weights) and one batch of random inputs, on `device`."""
    torch.manual_seed(0)
    model_cls = getattr(transformers, MODEL)
    config = make_config(model_cls)
    model = model_cls(config).to(device=device, dtype=DTYPE).train(TRAINING)
    return model, (), make_inputs(model, config, device)


if __name__ == "__main__":
    import sys

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, args, kwargs = build(device)
    if "--compile" in sys.argv:
        model = torch.compile(model)
    with torch.no_grad():
        output = model(*args, **kwargs)
    print(type(output).__name__)
