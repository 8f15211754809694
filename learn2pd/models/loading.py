"""Load a dLLM and its tokenizer from a local folder or a Hugging Face hub id."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

from learn2pd.models.configuration_llada import LLaDAConfig
from learn2pd.models.modeling_llada import LLaDAModelLM
from learn2pd.models.spec import ModelSpec, spec_from_model

AutoConfig.register("llada", LLaDAConfig, exist_ok=True)
AutoModel.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "checkpoints" / "tiny-llada"
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


class ModelLoadError(ValueError):
    pass


def resolve_dtype(dtype: str | torch.dtype, device: str = "cpu") -> torch.dtype:
    """`auto`: bfloat16 where the hardware computes it natively (CUDA with bf16, CPUs with bf16 units),
    else float32 (bf16 emulated on an older CPU is several times slower than float32)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if str(device).startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16
        native = str(device) == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        return torch.bfloat16 if native else torch.float32
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}: choose from auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _model_type(path: str) -> str:
    local = Path(path)
    if local.is_dir():
        cfg_file = local / "config.json"
        if not cfg_file.is_file():
            raise ModelLoadError(f"{path} has no config.json: point --model at a model folder "
                                 "(config.json + *.safetensors) or a hub id like GSAI-ML/LLaDA-8B-Instruct")
        return json.loads(cfg_file.read_text()).get("model_type", "")
    if local.exists() or path.startswith((".", "/", "~")) or path.count("/") != 1:
        raise ModelLoadError(f"no model folder at {path!r}: give a folder with config.json, or a hub id "
                             "like GSAI-ML/LLaDA-8B-Instruct (default: the embedded checkpoints/tiny-llada)")
    return AutoConfig.from_pretrained(path, trust_remote_code=True).model_type


def load_model(path: str | Path | None = None, dtype: str | torch.dtype = "float32", device: str = "cpu",
               trust_remote_code: bool = False):
    """Returns (model, tokenizer, spec). LLaDA loads natively; Dream needs `trust_remote_code=True`."""
    path = str(path or DEFAULT_MODEL)
    torch_dtype = resolve_dtype(dtype, device)
    mtype = _model_type(path)
    if mtype == "llada":
        model = LLaDAModelLM.from_pretrained(path, dtype=torch_dtype)
    elif mtype.lower() == "dream":
        if not trust_remote_code:
            raise ModelLoadError(f"{path} is a Dream model, whose code ships with the checkpoint: "
                                 "pass trust_remote_code=True (CLI: --trust-remote-code)")
        model = AutoModel.from_pretrained(path, dtype=torch_dtype, trust_remote_code=True)
    else:
        raise ModelLoadError(f"{path} has model_type {mtype!r}; learn2pd decodes masked dLLMs of type "
                             "'llada' or 'Dream'")
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = model.to(device).eval()
    return model, tokenizer, spec_from_model(model, tokenizer)


__all__ = ["DEFAULT_MODEL", "ModelSpec", "load_model"]
