"""${name} from timm with random weights, as compiled by run_inductor_suite.py (${mode}, ${dtype}).

Run: python ${file}  (eager)  or  python ${file} --compile
"""
import torch
import timm

# --- set by the suite (scraper/worker/programs.py renders these lines) ---
MODEL = "resnet18"
BATCH_SIZE = 8
DTYPE = torch.float32
TRAINING = False
# --- end of the suite's settings ---


def build(device="cuda"):
    """The model (random weights, nothing downloaded) and one batch of random images, on `device`."""
    torch.manual_seed(0)
    model = timm.create_model(MODEL, pretrained=False)
    input_size = tuple(model.pretrained_cfg.get("input_size", (3, 224, 224)))
    model = model.to(device=device, dtype=DTYPE).train(TRAINING)
    images = torch.randn((BATCH_SIZE, *input_size), device=device, dtype=DTYPE)
    return model, (images,), {}


if __name__ == "__main__":
    import sys

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, args, kwargs = build(device)
    if "--compile" in sys.argv:
        model = torch.compile(model)
    with torch.no_grad():
        output = model(*args, **kwargs)
    print(type(output).__name__)
