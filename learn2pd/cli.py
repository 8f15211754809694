"""Command line: `learn2pd generate | evaluate`. Thin wrappers over the library."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from learn2pd.tasks.suite import SHORT_GEN_LENGTH
from learn2pd.version import __version__

USER_ERRORS: tuple[type[Exception], ...] = (ValueError, FileNotFoundError, OSError)


def _decode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model folder or hub id (default: embedded checkpoints/tiny-llada)")
    p.add_argument("--gen-length", type=int, default=None,
                   help="answer tokens to decode (default 128; evaluate: 256 when a task is a long family)")
    p.add_argument("--block-length", type=int, default=32,
                   help="semi-autoregressive block size; divides --gen-length (default 32)")
    p.add_argument("--steps", type=int, default=None, help="baseline schedule steps (default: gen length)")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature; 0 is greedy (default)")
    p.add_argument("--cfg-scale", type=float, default=0.0, help="classifier-free guidance scale (default 0: off)")
    p.add_argument("--remasking", default="low_confidence", choices=["low_confidence", "random"],
                   help="which positions the vanilla schedule commits (default low_confidence)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--cache", default="none", choices=["none", "prefix", "dual"],
                   help="Fast-dLLM KV cache: reuse keys/values from each block's first forward (default none)")
    p.add_argument("--dtype", default="auto", help="auto (bf16 where the hardware has it), float32, bfloat16, float16")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="run a tokenizer's own code from its folder (the hub's Dream tokenizer needs it)")
    p.add_argument("--batch-size", type=int, default=64, help="prompts decoded together (default 64)")
    p.add_argument("--verbose", action="store_true",
                   help="let the libraries speak: weight-loading bars, their warnings, W&B's own output")


def _config(args, default_gen_length: int = SHORT_GEN_LENGTH):
    from learn2pd.decoding.config import DecodeConfig
    from learn2pd.models.loading import check_device

    check_device(args.device)

    cfg = DecodeConfig(gen_length=args.gen_length or default_gen_length, block_length=args.block_length,
                       steps=args.steps, temperature=args.temperature, cfg_scale=args.cfg_scale,
                       remasking=args.remasking, seed=args.seed, cache=args.cache)
    cfg.validate()
    return cfg


def _policy_spec(args) -> str:
    spec = args.policy
    if args.threshold is not None:
        name = spec.split("+")[0].split(":")[0]
        key = {"threshold": "tau", "factor": "factor"}.get(name)
        if key is None:
            raise ValueError(f"--threshold applies to the threshold and factor policies, not {name!r}")
        spec = f"{name}:{key}={args.threshold}" + "".join("+" + p for p in spec.split("+")[1:])
    return spec


def check_prompts(tokenizer, prompts: list[str]) -> None:
    """Refuse prompts the model cannot read: not UTF-8 (argv keeps such bytes as surrogates), empty, or with
    characters the tokenizer maps to its unknown token (the model would silently see something else)."""
    unk = tokenizer.unk_token_id
    for i, p in enumerate(prompts):
        bad = [f"0x{ord(c) - 0xDC00:02x}" for c in p if 0xDC80 <= ord(c) <= 0xDCFF]
        if bad:
            raise ValueError(f"prompt #{i} {p[:40]!r} has bytes that are not UTF-8 ({', '.join(bad)}): "
                             "pass the prompt as UTF-8 text")
        if not p.strip():
            raise ValueError(f"prompt #{i} is empty: give each prompt some text")
        if unk is not None and unk in tokenizer(p, add_special_tokens=False).input_ids:
            chars = sorted({c for c in p if unk in tokenizer(c, add_special_tokens=False).input_ids})
            raise ValueError(f"prompt #{i} {p[:40]!r} has characters this model's tokenizer maps to unknown "
                             f"({' '.join(map(repr, chars)) or 'a sequence of them'}): remove them or use a model "
                             "whose tokenizer covers them")


def cmd_generate(args) -> int:
    from learn2pd.decoding.batching import generate
    from learn2pd.decoding.plan import make_plan
    from learn2pd.models.loading import load_model, load_tokenizer

    cfg = _config(args)
    plan = make_plan(_policy_spec(args))
    check_prompts(load_tokenizer(args.model, args.trust_remote_code), args.prompt)  # before the weights load
    model, tok, spec = load_model(args.model, args.dtype, args.device, args.trust_remote_code)
    out = generate(model, tok, args.prompt, plan, cfg, spec, batch_size=args.batch_size)
    print_answers(args.prompt, out, plan.label, cfg.gen_length, as_json=args.json)
    return 0


def print_answers(prompts: list[str], out, label: str, gen_length: int, as_json: bool = False) -> None:
    """One clearly separated answer per prompt; with `as_json`, one JSON object per line (for scripts)."""
    import json

    for i, (prompt, text, nfe, lat) in enumerate(zip(prompts, out.texts, out.nfe.tolist(), out.latency_s.tolist())):
        if as_json:
            print(json.dumps({"prompt": prompt, "text": text, "plan": label, "nfe": nfe,
                              "tokens_per_forward": gen_length / nfe, "latency_s": lat}))
            continue
        print(f"{'' if i == 0 else chr(10)}=== [{i + 1}/{len(prompts)}] {prompt}")
        print(text)
        print(f"--- {label}: NFE {nfe}, tokens/forward {gen_length / nfe:.2f}, {lat:.2f}s (its batch)")


def cmd_evaluate(args) -> int:
    from learn2pd.atomic import check_output
    from learn2pd.decoding.plan import make_plan
    from learn2pd.evaluation.report import markdown_table, plot_pareto, write_atomic, write_json
    from learn2pd.evaluation.runner import evaluate
    from learn2pd.models.loading import load_model
    from learn2pd.tasks.fewshot import with_fewshot
    from learn2pd.tasks.loaders import load_problems
    from learn2pd.tasks.suite import default_gen_length

    _config(args)  # a bad device or region fails before anything is loaded
    if args.output:  # before the evaluation, whose results would otherwise be lost
        out = Path(args.output)
        for path in (out, out.with_suffix(".md"), out.with_suffix(".png")):
            check_output(path, "--output", overwrite=args.overwrite)
    policies = split_policies(args.policies)
    plans = [make_plan(p) for p in policies]  # built once, before loading anything: a typo fails fast
    problems = load_problems(args.tasks, args.num_samples, args.question_field, args.answer_field, args.split)
    problems = with_fewshot(problems, args.num_fewshot, args.seed)
    cfg = _config(args, default_gen_length(p.family for p in problems))
    model, tok, spec = load_model(args.model, args.dtype, args.device, args.trust_remote_code)
    report = evaluate(model, tok, spec, problems, plans, cfg, args.batch_size, progress=not args.quiet)
    report["config"] = {"model": str(args.model or "checkpoints/tiny-llada"), "tasks": args.tasks,
                        "num_samples": len(problems), "num_fewshot": args.num_fewshot, "policies": policies,
                        "batch_size": args.batch_size,
                        "learn2pd_version": __version__, **vars(cfg)}
    table = markdown_table(report["results"])
    print(table)
    if args.output:
        out = write_json(args.output, report)
        write_atomic(out.with_suffix(".md"), table + "\n")
        plot = plot_pareto(report["results"], out.with_suffix(".png"))
        print(f"wrote {out}, {out.with_suffix('.md')} and {plot}", file=sys.stderr)
    if args.wandb:
        from learn2pd import tracking

        run = tracking.log_evaluation(report, args.wandb_dir, verbose=args.verbose)
        print(f"W&B run ({tracking.wandb_mode()}): {run}", file=sys.stderr)
    return 0


def split_policies(text: str) -> list[str]:
    """`vanilla,localleap:kappa=0.8,tau=0.6+eotp` -> two specs: a `key=value` piece continues the spec before."""
    import re

    specs: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if specs and re.match(r"^\w+=", piece):
            specs[-1] += "," + piece
        elif piece:
            specs.append(piece)
    return specs


def cmd_demo(args) -> int:
    from learn2pd.demo import run_demo

    run_demo(args.out, args.num_traces, args.num_samples, dtype=args.dtype, progress=not args.quiet,
             overwrite=args.overwrite, cache=args.cache)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="learn2pd", description="Parallel decoding for masked diffusion LLMs")
    ap.add_argument("--version", action="version", version=f"learn2pd {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="decode prompts and print text and NFE")
    g.add_argument("--prompt", action="append", required=True, help="question text (repeat for a batch)")
    g.add_argument("--policy", default="vanilla", help="e.g. vanilla, threshold:tau=0.9, factor:factor=1")
    g.add_argument("--threshold", type=float, default=None, help="tau for threshold (f for factor)")
    g.add_argument("--json", action="store_true", help="one JSON object per prompt and line (prompt, text, plan, "
                   "nfe, tokens_per_forward, latency_s) instead of the readable answers")
    _decode_args(g)
    g.set_defaults(func=cmd_generate)

    e = sub.add_parser("evaluate", help="compare policies on held-out problems")
    e.add_argument("--tasks", default="suite", help="suite, short, long, all, families (arith,chain), "
                   "a .jsonl file, lm_eval:TASK[:FILTER] or hf:NAME[:CONFIG]")
    e.add_argument("--num-samples", type=int, default=100, help="problems to evaluate (default 100)")
    e.add_argument("--num-fewshot", type=int, default=0,
                   help="solved training problems of the same family before each built-in question (default 0)")
    e.add_argument("--question-field", default="question", help="HF dataset column with the question")
    e.add_argument("--answer-field", default="answer", help="HF dataset column with the answer")
    e.add_argument("--split", default="test", help="HF dataset split")
    e.add_argument("--policies", default="vanilla,threshold", help="comma-separated policy specs")
    e.add_argument("--output", default=None, help="results JSON (a .md table and .png plot go beside it)")
    e.add_argument("--overwrite", action="store_true", help="allow --output inside checkpoints/")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.add_argument("--wandb", action="store_true", help="log results table, Pareto plot, config and summary to "
                   "W&B (offline unless logged in; WANDB_MODE and WANDB_PROJECT are honoured)")
    e.add_argument("--wandb-dir", default="runs/evaluate", help="where the W&B run folder goes (default runs/evaluate)")
    _decode_args(e)
    e.set_defaults(func=cmd_evaluate)

    sub.add_parser("lm-eval", help="lm-evaluation-harness with the learn2pd model registered: lm-eval's own "
                   "flags follow (see README)")

    d = sub.add_parser("demo", help="end to end on the embedded tiny dLLM: traces, filter, evaluation")
    d.add_argument("--out", default="outputs/demo", help="folder for traces, filters, logs and results "
                   "(default outputs/demo)")
    d.add_argument("--num-traces", type=int, default=384, help="training problems to collect traces on (default 384)")
    d.add_argument("--num-samples", type=int, default=60,
                   help="held-out problems to evaluate, 12 per family at the default (default 60)")
    d.add_argument("--cache", default="none", choices=["none", "prefix", "dual"],
                   help="KV cache of the evaluation (default none; dual is Fast-dLLM's, as Learn2PD's headline)")
    d.add_argument("--dtype", default="auto", help="auto (bf16 where the hardware has it), float32, bfloat16")
    d.add_argument("--overwrite", action="store_true", help="allow --out inside checkpoints/")
    d.add_argument("--quiet", action="store_true", help="no progress output")
    d.add_argument("--verbose", action="store_true", help="let the libraries speak (Lightning, W&B, transformers)")
    d.set_defaults(func=cmd_demo)
    return ap


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from learn2pd.verbosity import quiet_libraries

    if argv[:1] == ["lm-eval"]:  # lm-eval's own flags follow: its parser reads them
        from learn2pd.harness.cli import main as lm_eval_main

        quiet_libraries("--verbose" in argv)
        return lm_eval_main([a for a in argv[1:] if a != "--verbose"])
    args = build_parser().parse_args(argv)
    quiet_libraries(getattr(args, "verbose", False))
    try:
        return args.func(args)
    except USER_ERRORS as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"learn2pd: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
