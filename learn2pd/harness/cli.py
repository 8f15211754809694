"""`learn2pd lm-eval ARGS` (or `python -m learn2pd.harness ARGS`): lm-eval's own command line, with the `learn2pd`
model registered and chosen by default (`--model learn2pd`). With `--output_path`, the decoding cost per task
(`results["config"]["learn2pd"]` of lm-eval's results file) is also written beside that file as
`decoding_cost_<date>.json`, and printed as a table. Under `accelerate launch` (or `torchrun`) every process runs
this command; rank 0 writes the files."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _with_model(argv: list[str]) -> list[str]:
    if (argv and argv[0] in ("ls", "validate")) or any(a == "--model" or a.startswith("--model=") for a in argv):
        return argv
    if argv and argv[0] == "run":
        return ["run", "--model", "learn2pd", *argv[1:]]
    return ["--model", "learn2pd", *argv] if argv and argv[0] not in ("-h", "--help") else argv


def results_file(output_path: str, since: float) -> Path | None:
    """The results JSON lm-eval wrote under `output_path` in this run (the newest since `since`)."""
    out = Path(output_path)
    found = out.parent.glob(f"{out.stem}_*.json") if out.suffix == ".json" else out.glob("**/results_*.json")
    fresh = [p for p in found if p.stat().st_mtime >= since and "decoding_cost" not in p.name]
    return max(fresh, key=lambda p: p.stat().st_mtime, default=None)


def write_cost(results: Path) -> Path | None:
    """decoding_cost_<date>.json beside lm-eval's results_<date>.json; None when no learn2pd model ran."""
    from learn2pd.atomic import write_atomic

    info = json.loads(results.read_text(encoding="utf-8")).get("config", {}).get("learn2pd")
    if not info:
        return None
    name = results.name.replace("results_", "decoding_cost_", 1) if results.name.startswith("results_") \
        else f"{results.stem}_decoding_cost.json"
    return write_atomic(results.with_name(name), json.dumps(info, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    from learn2pd.distributed import LaunchError, launch_env

    try:
        launch = launch_env(needs_rank=True)  # before lm-eval loads anything
    except LaunchError as err:
        print(f"learn2pd lm-eval: error: {err}", file=sys.stderr)
        return 2
    from lm_eval.__main__ import cli_evaluate

    from learn2pd.errors import run_command
    from learn2pd.harness.cost import markdown  # importing learn2pd.harness registers the learn2pd model

    argv = _with_model(list(sys.argv[1:] if argv is None else argv))
    out_arg = argparse.ArgumentParser(add_help=False)
    out_arg.add_argument("--output_path", "-o", default=None)
    output_path = out_arg.parse_known_args(argv)[0].output_path
    start, saved = time.time(), sys.argv
    sys.argv = ["lm-eval", *argv]  # lm-eval's CLI reads sys.argv
    try:  # a bad plan, model path or setting: one line, as learn2pd
        code = run_command("learn2pd lm-eval", lambda: cli_evaluate() or 0)
    finally:
        sys.argv = saved
    if code:
        return code
    if launch is not None and not launch.is_main:  # lm-eval wrote its results on rank 0 only
        return 0
    if not output_path:
        print("learn2pd lm-eval: no --output_path: the scores above are not saved and the decoding cost is not "
              "written (pass -o DIR)", file=sys.stderr)
        return 0
    results = results_file(output_path, start)
    if results is not None:
        print(f"lm-eval results written to {results}", file=sys.stderr)
    cost = write_cost(results) if results else None
    if cost:
        print(markdown(json.loads(cost.read_text())["decoding_cost"]))
        print(f"decoding cost written to {cost}", file=sys.stderr)
    return 0
