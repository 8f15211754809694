"""Filters on the Hugging Face Hub: `ORG/NAME[@REVISION]` resolves to a local snapshot, and a trained filter
is pushed with a model card. Filters are per model and tiny, so they are shared the way LoRA adapters are.

A local folder always wins over a Hub id of the same spelling; the download is huggingface_hub's own
(its cache, `HF_HUB_OFFLINE=1`, `HF_TOKEN`), never ours.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

# ORG/NAME with an optional @REVISION (branch, tag or commit), as the Hub spells repository ids
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(@[\w./-]+)?$")
FILES = ["config.json", "model.safetensors", "README.md"]


def is_hub_id(path) -> bool:
    return bool(HUB_ID.match(str(path))) and not Path(path).exists()


def resolve_filter(path) -> Path:
    """The local folder of a filter: `path` itself when it exists (or is no Hub id), else a snapshot of the
    Hub repository `ORG/NAME[@REVISION]` from huggingface_hub's cache (downloaded when online)."""
    if not is_hub_id(path):
        return Path(path)
    repo, _, revision = str(path).partition("@")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, revision=revision or None, allow_patterns=FILES))
    except Exception as err:  # offline and not cached, no such repo or revision, no access: one line, the fix
        why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FileNotFoundError(f"no filter at {path}: no such folder, and the Hub repository {repo}"
                                f"{'@' + revision if revision else ''} could not be loaded ({type(err).__name__}: "
                                f"{why[:160]}); pass a filter folder, or a Hub id you can read (online, or "
                                "already in the Hub cache with HF_HUB_OFFLINE=1)") from None


def model_card(config: dict, traces_meta: dict | None = None, repo_id: str | None = None,
               folder: str | None = None) -> str:
    """A model card (README.md with Hub metadata) for an exported filter: what it was trained on, how well
    it did, and how to use it, by its Hub id when pushed, else by its folder."""
    meta = traces_meta or {}
    training = config.get("training", {})
    base = meta.get("model", "unknown")
    name = repo_id or folder or "PATH"
    role = "End-of-Text predictor" if config.get("kind") == "eot" else "parallel-decoding filter"
    metrics = "\n".join(f"| {k.removeprefix('test/')} | {v:.4f} |" for k, v in training.items()
                        if k.startswith("test/") and isinstance(v, (int, float)))
    decoding = meta.get("decoding", {})
    spec = (f"learned:path={name}+eotp" if config.get("kind") != "eot"
            else f"learned:path=FILTER,eot={name}+eotp")
    family = meta.get("model_type", config.get("model_type"))
    rows = "\n".join(f"| {k} | {v} |" for k, v in [
        ("base model", f"`{base}`"),
        ("base model weights fingerprint", f"`{meta.get('weights', 'unknown')}`"),
        ("kind, features", f"{config.get('kind')}, {', '.join(config.get('features') or [])}"),
        ("threshold", config.get("threshold")),
        ("thresholds chosen by decoding, per block length", config.get("thresholds") or "none (learn2pd calibrate)"),
        ("block length", "any (no block-bound feature)" if config.get("kind") != "learn2pd"
         and "pos_in_block" not in (config.get("features") or []) else config.get("block_length")),
        ("traces", f"`{training.get('traces', 'unknown')}`: {meta.get('num_prompts', '?')} prompts of "
                   f"`{meta.get('tasks', '?')}`, mode {meta.get('mode', '?')}, reference "
                   f"`{meta.get('reference_plan', '?')}`, gen length {decoding.get('gen_length', '?')}, "
                   f"dtype {meta.get('dtype', '?')}"),
        ("training", f"{training.get('epochs', '?')} epochs, lr {training.get('lr', '?')}, best validation loss "
                     f"{training.get('best_val_loss', float('nan')):.4f}")])
    front = {"library_name": "learn2pd", "tags": ["learn2pd", "diffusion-llm", "parallel-decoding"]}
    if "/" in str(base) and not Path(str(base)).exists():
        front["base_model"] = base
    return f"""---
{chr(10).join(f"{k}: {json.dumps(v)}" for k, v in front.items())}
---

# {name}: a learn2pd {role}

A {config.get('kind')} {role} for the masked diffusion LLM `{base}` ({family}),
trained with learn2pd on the model's own decoding traces. It is refused on another model
family or block length.

| | |
|---|---|
{rows}

Test metrics (held-out prompts):

| metric | value |
|---|---:|
{metrics}

## Use

```bash
pip install learn2pd
learn2pd generate --model {base} --prompt "..." --block-length {config.get('block_length')} --policy "{spec}"
```

```python
from learn2pd import LearnedPolicy
policy = LearnedPolicy.from_pretrained("{name}")   # a Hub id or a local folder
```
"""


def check_repo_id(repo_id: str) -> None:
    if not HUB_ID.match(repo_id) or "@" in repo_id:
        raise ValueError(f"push_to_hub {repo_id!r} is not a Hub repository id: write ORG/NAME")


def write_model_card(folder, traces_meta: dict | None = None, repo_id: str | None = None) -> Path:
    """Write README.md (the model card) into an exported filter folder."""
    from learn2pd.atomic import write_atomic

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    return write_atomic(folder / "README.md", model_card(config, traces_meta, repo_id, str(folder)))


def push_filter(folder, repo_id: str, traces_meta: dict | None = None, private: bool = False,
                commit_message: str | None = None) -> str:
    """Upload an exported filter folder (config.json, model.safetensors, its model card) to `repo_id`;
    returns the commit URL. Needs a Hub token (`huggingface-cli login` or HF_TOKEN)."""
    from huggingface_hub import HfApi

    check_repo_id(repo_id)
    write_model_card(folder, traces_meta, repo_id)
    api = HfApi()
    api.create_repo(repo_id, exist_ok=True, private=private)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, allow_patterns=FILES,
                             commit_message=commit_message or f"learn2pd filter ({Path(folder).name})")
    return str(getattr(info, "commit_url", info))
