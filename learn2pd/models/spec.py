"""What the decoding engine must know about a model family, and nothing else."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    """Token ids and conventions of one dLLM family.

    `logit_shift`: Dream-style models predict position i from logits[i - 1]; the engine realigns
    them with `cat(logits[:, :1], logits[:, :-1])` so every policy sees `logits[i]` for position i.
    """

    family: str
    mask_id: int
    eos_id: int
    pad_id: int
    end_ids: tuple[int, ...]  # tokens that end the answer (EOS and end-of-turn)
    delimiter_ids: tuple[int, ...] = ()  # block-boundary hints for AdaBlock (newline, ...)
    logit_shift: bool = False
    context_length: int | None = None


# AdaBlock's published delimiters: LLaDA "\n" only (eval default [198]); Dream a fixed list of newline tokens
# (generation_utils_adablock.py).
LLADA_8B = dict(mask_id=126336, eos_id=126081, pad_id=126081, end_ids=(126081, 126348), delimiter_ids=(198,))
DREAM_7B = dict(mask_id=151666, eos_id=151643, pad_id=151643, end_ids=(151643, 151645),
                delimiter_ids=(198, 271, 280, 319, 340, 382, 401, 532, 624, 630, 692, 698, 921, 1248, 1837, 1939,
                               2219, 2533, 3276, 3876, 4894, 5267, 14750, 68327))


def spec_from_model(model, tokenizer=None) -> ModelSpec:
    """Derive the spec from a loaded model's config (and tokenizer for the delimiter ids)."""
    return spec_from_config(model.config, tokenizer)


def spec_from_config(cfg, tokenizer=None) -> ModelSpec:
    """The spec of a model config (a LLaDAConfig or DreamConfig): known before the weights load."""
    mtype = getattr(cfg, "model_type", "")
    context = getattr(cfg, "max_sequence_length", None) or getattr(cfg, "max_position_embeddings", None)
    if mtype == "llada":
        if cfg.mask_token_id == LLADA_8B["mask_id"]:
            return ModelSpec("llada", context_length=context, **LLADA_8B)
        end = tuple(i for i in (cfg.eos_token_id, getattr(cfg, "eot_token_id", None)) if i is not None)
        delims = tuple(tokenizer.convert_tokens_to_ids(["\n"])) if tokenizer is not None else ()
        return ModelSpec("llada", cfg.mask_token_id, cfg.eos_token_id, cfg.pad_token_id, end, delims,
                         context_length=context)
    if mtype.lower() == "dream":
        if cfg.mask_token_id == DREAM_7B["mask_id"]:
            return ModelSpec("dream", logit_shift=True, context_length=context, **DREAM_7B)
        eos = cfg.eos_token_id if cfg.eos_token_id is not None else cfg.pad_token_id
        end = tuple(i for i in (eos, getattr(cfg, "eot_token_id", None)) if i is not None)
        delims = tuple(tokenizer.convert_tokens_to_ids(["\n"])) if tokenizer is not None else ()
        return ModelSpec("dream", cfg.mask_token_id, eos, cfg.pad_token_id, end, delims, logit_shift=True,
                         context_length=context)
    raise ValueError(f"unsupported model_type {mtype!r}: learn2pd knows 'llada' and 'Dream'")
