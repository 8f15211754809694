"""Trace schema: a `datasets.DatasetDict` with two tables.

`steps`: one row per (prompt, decoding step), the block's view at that step, in position order and
zero-padded to `block_length`:
    prompt_id (int64)      index of the prompt in the collection's prompt list
    block (int32)          block index;  step (int32): step inside the block
    block_start (int32)    first position of the block in the generation region
    length (int32)         real positions in the block (the last block or AdaBlock may be shorter)
    confidence (float32[]) softmax probability of the argmax token
    margin (float32[])     top-1 minus top-2 probability
    entropy (float32[])    entropy of the predicted distribution (nats)
    token (int32[])        argmax token ids
    masked (bool[])        still masked before this step
    committed (bool[])     committed at this step
    label (bool[])         the argmax equals the reference token (the filter's target)
`sequences`: one row per prompt:
    prompt_id, prompt (str), family (str), prompt_ids (int32[]), reference (int32[], the vanilla
    output), end_position (int32, first end-of-text position, -1 if none), nfe (int32), correct (bool)
"""

from __future__ import annotations

import datasets

STEP_FEATURES = datasets.Features({
    "prompt_id": datasets.Value("int64"),
    "block": datasets.Value("int32"),
    "step": datasets.Value("int32"),
    "block_start": datasets.Value("int32"),
    "length": datasets.Value("int32"),
    "confidence": datasets.Sequence(datasets.Value("float32")),
    "margin": datasets.Sequence(datasets.Value("float32")),
    "entropy": datasets.Sequence(datasets.Value("float32")),
    "token": datasets.Sequence(datasets.Value("int32")),
    "masked": datasets.Sequence(datasets.Value("bool")),
    "committed": datasets.Sequence(datasets.Value("bool")),
    "label": datasets.Sequence(datasets.Value("bool")),
})

SEQUENCE_FEATURES = datasets.Features({
    "prompt_id": datasets.Value("int64"),
    "prompt": datasets.Value("string"),
    "family": datasets.Value("string"),
    "prompt_ids": datasets.Sequence(datasets.Value("int32")),
    "reference": datasets.Sequence(datasets.Value("int32")),
    "end_position": datasets.Value("int32"),
    "nfe": datasets.Value("int32"),
    "correct": datasets.Value("bool"),
})


def check_schema(ds: datasets.DatasetDict, where: str) -> None:
    """Raise a clear error when a traces dataset lacks the tables or columns above."""
    for table, feats in (("steps", STEP_FEATURES), ("sequences", SEQUENCE_FEATURES)):
        if table not in ds:
            raise ValueError(f"{where} is not a learn2pd traces dataset: no '{table}' table "
                             "(collect one with `collect-traces`)")
        missing = [c for c in feats if c not in ds[table].column_names]
        if missing:
            raise ValueError(f"{where}: table '{table}' lacks columns {missing}: re-collect with this learn2pd version")
        if len(ds[table]) == 0:
            raise ValueError(f"{where}: table '{table}' is empty")
