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
from learn2pd.models.spec import ModelSpec, spec_from_config, spec_from_model

AutoConfig.register("llada", LLaDAConfig, exist_ok=True)
AutoModel.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)
AutoConfig.register("Dream", DreamConfig, exist_ok=True)
AutoModel.register(DreamConfig, DreamModel, exist_ok=True)

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "checkpoints" / "tiny-llada"
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
DTYPE_NAMES = ("auto", *DTYPES)


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


# learn2pd's own classes per model type, compared lowercased (Dream's config says "Dream")
CLASSES = {"llada": (LLaDAConfig, LLaDAModelLM), "dream": (DreamConfig, DreamModel)}


def _hub_config(repo: str) -> dict:
    """A hub repository's config.json, read as JSON: nothing it names (`auto_map`) is imported or run, and an
    unreachable hub is one error at once (no retries), since only a local folder can help then."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    def unreachable():
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the hub cannot be reached"
        return ModelLoadError(f"hub id {repo!r} is not in the local hub cache and {why}: pass a local model folder "
                              "(config.json + *.safetensors) instead")

    try:
        try:
            file = hf_hub_download(repo, "config.json", local_files_only=True)
        except LocalEntryNotFoundError:
            if constants.HF_HUB_OFFLINE:
                raise unreachable() from None
            # one request without retries (hf_hub_download alone retries an unreachable hub for a minute)
            try:
                get_hf_file_metadata(hf_hub_url(repo, "config.json"))
            except HfHubHTTPError:
                raise
            except Exception:  # the HTTP client's connection errors (its module differs between versions)
                raise unreachable() from None
            file = hf_hub_download(repo, "config.json")
    except RepositoryNotFoundError:
        raise ModelLoadError(f"no hub repository {repo!r} (or it is gated): check the id, or pass a local model "
                             "folder") from None
    except EntryNotFoundError:
        raise ModelLoadError(f"hub repository {repo!r} has no config.json: it is not a model") from None
    except HFValidationError:
        raise ModelLoadError(f"no model folder at {repo!r}, and it is not a valid hub id") from None
    try:
        return json.loads(Path(file).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"config.json of {repo!r} is not valid JSON ({e}): download it again") from None


def _model_type(path: str) -> str:
    return str(model_config(path)["model_type"])


def context_length(path: str | Path | None = None) -> int | None:
    """The model's context in tokens, from its config.json (before the weights load): prompts are checked
    against it. The same keys as `spec_from_model`."""
    cfg = model_config(str(path or DEFAULT_MODEL))
    return cfg.get("max_sequence_length") or cfg.get("max_position_embeddings")


def model_config(path: str) -> dict:
    """config.json of a model folder or hub id as JSON, its model type refused unless learn2pd decodes it:
    checked before any class is built, so a config's `auto_map` (code shipped with the model) is never reached."""
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
        if isinstance(raw, dict) and "kind" in raw and "architectures" not in raw:  # a filter (has model_type too)
            raise ModelLoadError(f"{path} is a learn2pd filter, not a model: pass it in a policy as "
                                 f"learned:path={path}, and a dLLM folder or hub id as --model")
    elif local.exists() or path.startswith((".", "/", "~")) or path.count("/") != 1:
        raise ModelLoadError(f"no model folder at {path!r}: give a folder with config.json, or a hub id "
                             "like GSAI-ML/LLaDA-8B-Instruct (default: the embedded checkpoints/tiny-llada)")
    else:
        raw = _hub_config(path)
    mtype = raw.get("model_type", "") if isinstance(raw, dict) else ""
    if str(mtype).lower() not in CLASSES:
        raise ModelLoadError(f"{path} has model_type {mtype!r}; learn2pd decodes masked dLLMs of type "
                             "'llada' or 'Dream'")
    return raw


def model_spec(path: str | Path | None, tokenizer) -> ModelSpec:
    """The spec `load_model` returns, from config.json alone: plans are checked against it (a filter of
    another model family, a block length it was not trained for) before minutes of loading weights."""
    raw = model_config(str(path or DEFAULT_MODEL))
    config_class = CLASSES[str(raw["model_type"]).lower()][0]
    config = config_class.from_dict({k: v for k, v in raw.items() if k != "auto_map"})  # as from_pretrained reads it
    return spec_from_config(config, tokenizer)


def _load_tokenizer(path: str, trust_remote_code: bool):
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except ValueError as e:
        if trust_remote_code or "trust_remote_code" not in str(e):
            raise
        raise ModelLoadError(f"the tokenizer of {path} ships its own Python code: pass --trust-remote-code "
                             "(trust_remote_code=True in Python or lm-eval model args) if you trust it") from None


def check_device(device: str) -> None:
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ModelLoadError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ModelLoadError(f"--device {device}: learn2pd runs on cpu, cuda or cuda:N")
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
    return _load_tokenizer(path, trust_remote_code)


def load_model(path: str | Path | None = None, dtype: str | torch.dtype = "float32", device: str = "cpu",
               trust_remote_code: bool = False):
    """Returns (model, tokenizer, spec). LLaDA and Dream load natively (no remote code); a hub tokenizer
    that ships its own code (Dream's) needs `trust_remote_code=True`."""
    path = str(path or DEFAULT_MODEL)
    check_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    mtype = _model_type(path)
    try:  # the native classes: a config's auto_map is never looked at
        model = CLASSES[mtype.lower()][1].from_pretrained(path, dtype=torch_dtype)
    except SafetensorError as e:
        raise ModelLoadError(f"{_bad_weights(path)} is corrupted or truncated ({e}): download or export the "
                             "model again") from None
    tokenizer = _load_tokenizer(path, trust_remote_code)
    model = model.to(device).eval()
    return model, tokenizer, spec_from_model(model, tokenizer)


__all__ = ["DEFAULT_MODEL", "ModelSpec", "load_model"]
