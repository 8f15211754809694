import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "checkpoints" / "tiny-llada"


@pytest.fixture(scope="session")
def tiny():
    """The shipped tiny dLLM: (model, tokenizer, spec)."""
    from learn2pd.models.loading import load_model

    if not (TINY / "config.json").is_file():
        pytest.skip("checkpoints/tiny-llada not built yet (make tiny-model)")
    return load_model(TINY)
