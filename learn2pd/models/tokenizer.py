"""The character-level tokenizer of the embedded tiny dLLM, as a transformers fast tokenizer."""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {"mask": "<|mask|>", "eos": "<|eos|>", "bos": "<|bos|>", "unk": "<|unk|>"}
CHARACTERS = "\n !#()*+,-./0123456789:;<=>?abcdefghijklmnopqrstuvwxyz"


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character; the mask is id 0 and EOS (also the pad token, as in LLaDA) id 1."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS.values())}
    for ch in CHARACTERS:
        vocab[ch] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk"]))
    # Split every character into its own piece (newlines included); special tokens are matched first.
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens(list(SPECIAL_TOKENS.values()))
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        mask_token=SPECIAL_TOKENS["mask"],
        eos_token=SPECIAL_TOKENS["eos"],
        pad_token=SPECIAL_TOKENS["eos"],
        bos_token=SPECIAL_TOKENS["bos"],
        unk_token=SPECIAL_TOKENS["unk"],
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
