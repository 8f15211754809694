"""Load a dLLM and its tokenizer from a local folder or a Hugging Face hub id."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoConfig, AutoModel, AutoTokenizer

from learn2pd.models.configuration_dream import DreamConfig
from learn2pd.models.configuration_llada import LLaDAConfig
from learn2pd.models.modeling_dream import DreamModel
from learn2pd.models.modeling_llada import LLaDAModelLM
from learn2pd.models.spec import ModelSpec, spec_from_model

AutoConfig.register("llada", LLaDAConfig, exist_ok=True)
AutoModel.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)
AutoConfig.register("Dream", DreamConfig, exist_ok=True)
AutoModel.register(DreamConfig, DreamModel, exist_ok=True)

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
        try:
            raw = json.loads(cfg_file.read_text())
        except json.JSONDecodeError as e:
            raise ModelLoadError(f"{cfg_file} is not valid JSON ({e}): download or export the model again") from None
        if "kind" in raw and "architectures" not in raw:  # a learn2pd filter's config (it has model_type too)
            raise ModelLoadError(f"{path} is a learn2pd filter, not a model: pass it in a policy as "
                                 f"learned:path={path}, and a dLLM folder or hub id as --model")
        return raw.get("model_type", "")
    if local.exists() or path.startswith((".", "/", "~")) or path.count("/") != 1:
        raise ModelLoadError(f"no model folder at {path!r}: give a folder with config.json, or a hub id "
                             "like GSAI-ML/LLaDA-8B-Instruct (default: the embedded checkpoints/tiny-llada)")
    return AutoConfig.from_pretrained(path, trust_remote_code=True).model_type


def check_device(device: str) -> None:
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ModelLoadError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        fix = "install a CUDA build" if torch.version.cuda is None else "check the driver and CUDA_VISIBLE_DEVICES"
        why = "this torch has no CUDA" if torch.version.cuda is None else "torch sees no CUDA device"
        raise ModelLoadError(f"--device {device}: {why}; use --device cpu or {fix}")


def _bad_weights(path: str) -> str:
    """The first safetensors file of a local folder whose header does not open (the one to name)."""
    for f in sorted(Path(path).glob("*.safetensors")):
        try:
            with safe_open(str(f), framework="pt"):
                pass
        except SafetensorError:
            return str(f)
    return f"the weights of {path}"


def load_tokenizer(path: str | Path | None = None, trust_remote_code: bool = False):
    """The tokenizer alone (cheap): checks inputs before the weights are loaded."""
    path = str(path or DEFAULT_MODEL)
    _model_type(path)
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def load_model(path: str | Path | None = None, dtype: str | torch.dtype = "float32", device: str = "cpu",
               trust_remote_code: bool = False):
    """Returns (model, tokenizer, spec). LLaDA and Dream load natively (no remote code); a hub tokenizer
    that ships its own code (Dream's) needs `trust_remote_code=True`."""
    path = str(path or DEFAULT_MODEL)
    check_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    mtype = _model_type(path)
    try:
        if mtype == "llada":
            model = LLaDAModelLM.from_pretrained(path, dtype=torch_dtype)
        elif mtype.lower() == "dream":
            model = DreamModel.from_pretrained(path, dtype=torch_dtype)
        else:
            raise ModelLoadError(f"{path} has model_type {mtype!r}; learn2pd decodes masked dLLMs of type "
                                 "'llada' or 'Dream'")
    except SafetensorError as e:
        raise ModelLoadError(f"{_bad_weights(path)} is corrupted or truncated ({e}): download or export the "
                             "model again") from None
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = model.to(device).eval()
    return model, tokenizer, spec_from_model(model, tokenizer)


__all__ = ["DEFAULT_MODEL", "ModelSpec", "load_model"]
