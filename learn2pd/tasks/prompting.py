"""Turn a question into model input ids: the tokenizer's chat template when it has one."""

from __future__ import annotations

import torch


def format_prompt(tokenizer, question: str) -> list[int]:
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": question}]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return tokenizer(text, add_special_tokens=False).input_ids
    # Plain format of the embedded tiny model: <bos> question \n, the answer follows.
    return [tokenizer.bos_token_id, *tokenizer(question + "\n", add_special_tokens=False).input_ids]


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad id lists to one tensor; returns (ids [B, P], attention_mask [B, P])."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        if seq:
            ids[i, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[i, width - len(seq):] = 1
    return ids, mask


def encode_context(tokenizer, text: str, add_special_tokens: bool | None = None) -> list[int]:
    """Ids of a prompt already written out as text (an lm-eval context, plain or chat-rendered).

    A text that starts with the BOS token's text gets no special tokens (the chat template wrote them), else the
    tokenizer's own (LLaDA's adds BOS, as its lm-eval code encodes contexts). A tokenizer without a chat template
    that adds no BOS gets one in front: learn2pd's plain format, `format_prompt`'s `<bos> question \\n`.
    """
    if add_special_tokens is False:
        return tokenizer(text, add_special_tokens=False).input_ids
    bos_text, bos = tokenizer.bos_token, tokenizer.bos_token_id
    written = bool(bos_text) and text.startswith(bos_text)
    ids = tokenizer(text, add_special_tokens=not written).input_ids
    if not written and bos is not None and ids[:1] != [bos] and not getattr(tokenizer, "chat_template", None):
        ids = [bos, *ids]
    return ids
