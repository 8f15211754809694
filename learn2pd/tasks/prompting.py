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


def prompt_problem(tokenizer, prompt) -> str | None:
    """Why the model cannot read `prompt` as given, or None: not text, not UTF-8 (argv keeps such bytes as
    surrogates), empty, or with characters the tokenizer maps to its unknown token (the model would silently
    see something else)."""
    if not isinstance(prompt, str):
        return f"is {type(prompt).__name__}, not text: give each prompt as text"
    bad = [f"0x{ord(c) - 0xDC00:02x}" for c in prompt if 0xDC80 <= ord(c) <= 0xDCFF]
    if bad:
        return f"has bytes that are not UTF-8 ({', '.join(bad)}): pass the prompt as UTF-8 text"
    if not prompt.strip():
        return "is empty: give each prompt some text"
    unk = tokenizer.unk_token_id
    if unk is not None and unk in tokenizer(prompt, add_special_tokens=False).input_ids:
        chars = sorted({c for c in prompt if unk in tokenizer(c, add_special_tokens=False).input_ids})
        shown = " ".join(map(repr, chars)) or "a sequence of them"
        return (f"has characters this model's tokenizer maps to unknown ({shown}): remove them or use a model "
                "whose tokenizer covers them")
    return None


def check_prompts(tokenizer, prompts, names=None, gen_length: int | None = None,
                  context_length: int | None = None) -> None:
    """Refuse, in one line, the first prompt the model cannot read (`prompt_problem`), or (given both lengths)
    whose formatted ids and `gen_length` exceed the context. `names[i]` names prompt i (FILE:LINE of a JSONL,
    default `prompt #i`). Every entry point calls it with the tokenizer alone, before the weights load."""
    label = lambda i: (names[i] if names else "") or f"prompt #{i}"  # noqa: E731
    for i, prompt in enumerate(prompts):
        why = prompt_problem(tokenizer, prompt)
        if why:
            raise ValueError(f"{label(i)}{'' if why.startswith('is ') else f' {prompt[:40]!r}'} {why}")
    if not (gen_length and context_length):
        return
    if gen_length >= context_length:
        raise ValueError(f"--gen-length {gen_length} leaves no room for a prompt in the model's context of "
                         f"{context_length} tokens: lower --gen-length")
    for i, prompt in enumerate(prompts):
        n = len(format_prompt(tokenizer, prompt))
        if n + gen_length > context_length:
            raise ValueError(f"{label(i)} is {n} tokens, and with gen_length {gen_length} exceeds the model's "
                             f"context of {context_length}: shorten it or lower --gen-length")


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
