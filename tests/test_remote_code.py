"""Code shipped with a hub model (a config's or tokenizer's `auto_map`) runs only with the user's consent.

A local hub cache (HF_HUB_CACHE, offline) holds repositories whose Python would write a marker file when
imported; loading them by hub id must refuse in one line and leave no marker."""

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0" * 40
PAYLOAD = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\nfrom transformers import {base} as {cls}\n"


def hub_repo(cache: Path, repo: str, files: dict[str, str], copy_from: Path | None = None) -> Path:
    """A repository as huggingface_hub stores it: refs/main -> snapshots/<commit>/ with the files."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(COMMIT)
    if copy_from is not None:
        for f in copy_from.iterdir():
            shutil.copy(f, snap / f.name)
    for name, text in files.items():
        (snap / name).write_text(text)
    return snap


def run(args: list[str], cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent / "hf-home"),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "learn2pd.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def one_error_line(proc) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("Loading weights")]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("learn2pd: error: "), proc.stderr
    return lines[0]


def test_config_auto_map_of_another_model_type_never_runs(tmp_path):
    marker = tmp_path / "remote-code-ran"
    cache = tmp_path / "hub"
    hub_repo(cache, "someone/evil", {
        "config.json": json.dumps({"model_type": "evil", "auto_map": {"AutoConfig": "evil.EvilConfig",
                                                                        "AutoModel": "evil.EvilConfig"}}),
        "evil.py": PAYLOAD.format(marker=str(marker), base="PretrainedConfig", cls="EvilConfig")})
    line = one_error_line(run(["generate", "--model", "someone/evil", "--prompt", "x"], cache))
    assert not marker.exists()
    assert "someone/evil has model_type 'evil'" in line and "'llada' or 'Dream'" in line


def test_llada_repo_with_remote_tokenizer_needs_consent(tmp_path, random_ckpt):
    """A llada config loads with the native class (its auto_map is ignored); a tokenizer that ships code is
    refused without --trust-remote-code, naming the flag."""
    marker = tmp_path / "remote-code-ran"
    cache = tmp_path / "hub"
    snap = hub_repo(cache, "someone/llada", {"evil.py": PAYLOAD.format(
        marker=str(marker), base="PreTrainedTokenizerFast", cls="EvilTokenizer")}, copy_from=random_ckpt)
    config = json.loads((snap / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    (snap / "config.json").write_text(json.dumps(config))
    tok_cfg = json.loads((snap / "tokenizer_config.json").read_text())
    tok_cfg["auto_map"] = {"AutoTokenizer": [None, "evil.EvilTokenizer"]}
    tok_cfg.pop("tokenizer_class", None)
    (snap / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    line = one_error_line(run(["generate", "--model", "someone/llada", "--prompt", "x", "--gen-length", "16",
                               "--block-length", "8"], cache))
    assert not marker.exists()
    assert "someone/llada" in line and "--trust-remote-code" in line


def test_hub_id_offline_not_in_cache_is_one_line(tmp_path):
    line = one_error_line(run(["generate", "--model", "nobody/missing-model", "--prompt", "x"], tmp_path / "hub"))
    assert "'nobody/missing-model' is not in the local hub cache" in line and "HF_HUB_OFFLINE" in line
    assert "local model folder" in line


def test_no_call_passes_trust_remote_code_true():
    """Every trust_remote_code= in the code passes the user's choice along, never a literal True."""
    hits = []
    for folder in ("learn2pd", "trainers", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call):
                    hits += [f"{path}:{node.lineno}" for k in node.keywords if k.arg == "trust_remote_code"
                             and not (isinstance(k.value, ast.Name) or isinstance(k.value, ast.Attribute))]
    assert not hits, hits


def test_hub_id_unreachable_hub_is_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "learn2pd.cli", "generate", "--model", "nobody/missing-model",
                           "--prompt", "x"], env=env, capture_output=True, text=True, timeout=120)
    line = one_error_line(proc)
    assert "'nobody/missing-model' is not in the local hub cache and the hub cannot be reached" in line
