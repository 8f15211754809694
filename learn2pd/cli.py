"""Command line: `learn2pd generate | evaluate`. Thin wrappers over the library."""

from __future__ import annotations

import argparse
import sys

from learn2pd.configfile import Check, OneLineParser
from learn2pd.errors import run_command
from learn2pd.tasks.suite import SHORT_GEN_LENGTH
from learn2pd.version import __version__

# flag types: the text checked as the value (one line naming the flag, the value and what is allowed)
POSITIVE = Check(int, gt=0).flag("positive int")
NON_NEGATIVE = Check(int, ge=0).flag("int >= 0")
NON_NEGATIVE_FLOAT = Check(float, ge=0).flag("number >= 0")
INT = Check(int).flag("int")



def _decode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model folder or hub id (default: embedded checkpoints/tiny-llada)")
    p.add_argument("--gen-length", type=POSITIVE, default=None,
                   help="answer tokens to decode (default 128; evaluate: 256 when a task is a long family, an "
                        "lm-eval task's own max_gen_toks)")
    p.add_argument("--block-length", type=POSITIVE, default=32,
                   help="semi-autoregressive block size; divides --gen-length (default 32)")
    p.add_argument("--steps", type=POSITIVE, default=None, help="baseline schedule steps (default: gen length)")
    p.add_argument("--temperature", type=NON_NEGATIVE_FLOAT, default=0.0,
                   help="sampling temperature; 0 is greedy (default)")
    p.add_argument("--cfg-scale", type=NON_NEGATIVE_FLOAT, default=0.0,
                   help="classifier-free guidance scale (default 0: off)")
    p.add_argument("--remasking", default="low_confidence", choices=["low_confidence", "random"],
                   help="which positions the vanilla schedule commits (default low_confidence)")
    p.add_argument("--seed", type=INT, default=0, help="random seed (default 0)")
    p.add_argument("--cache", default="none", choices=["none", "prefix", "dual"],
                   help="Fast-dLLM KV cache: reuse keys/values from each block's first forward (default none)")
    p.add_argument("--dtype", default="auto", help="auto (bf16 where the hardware has it), float32, bfloat16, float16")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="run a tokenizer's own code from its folder (the hub's Dream tokenizer needs it)")
    p.add_argument("--batch-size", type=POSITIVE, default=64, help="prompts decoded together (default 64)")
    p.add_argument("--verbose", action="store_true",
                   help="let the libraries speak: weight-loading bars, their warnings, W&B's own output")


def _config(args, default_gen_length: int = SHORT_GEN_LENGTH):
    from learn2pd.decoding.config import DecodeConfig
    from learn2pd.models.loading import check_device, resolve_dtype

    check_device(args.device)
    resolve_dtype(args.dtype, args.device)
    cfg = DecodeConfig(gen_length=args.gen_length if args.gen_length is not None else default_gen_length,
                       block_length=args.block_length,
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


def cmd_generate(args) -> int:
    from learn2pd.decoding.batching import generate
    from learn2pd.decoding.plan import check_plans, make_plan
    from learn2pd.models.loading import context_length, load_model, load_tokenizer, model_spec
    from learn2pd.tasks.prompting import check_prompts

    cfg = _config(args)
    plan = make_plan(_policy_spec(args))
    tok = load_tokenizer(args.model, args.trust_remote_code)
    check_prompts(tok, args.prompt, gen_length=cfg.gen_length, context_length=context_length(args.model))
    check_plans([plan], cfg, model_spec(args.model, tok), references=False)  # before the weights load
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
    from learn2pd.decoding.plan import check_plans, make_plan
    from learn2pd.distributed import check_launch
    from learn2pd.evaluation.report import markdown_table, plot_pareto, report_paths, write_atomic, write_json
    from learn2pd.evaluation.runner import evaluate
    from learn2pd.models.loading import context_length, load_model, load_tokenizer, model_spec
    from learn2pd.tasks.fewshot import check_fewshot, with_fewshot
    from learn2pd.tasks.loaders import load_problems
    from learn2pd.tasks.prompting import check_prompts
    from learn2pd.tasks.suite import problems_gen_length

    check_launch(args.device, args.devices, args.num_nodes, args.strategy)  # device counts before dtype checks
    _config(args)  # a bad device or region fails before anything is loaded
    if args.output:  # before the evaluation, whose results would otherwise be lost
        out, table_path, plot_path = report_paths(args.output, args.overwrite)
    policies = split_policies(args.policies)
    if not policies:
        raise ValueError(f"--policies {args.policies!r} names no policy: e.g. --policies vanilla,threshold")
    plans = [make_plan(p) for p in policies]  # built once, before loading anything: a typo fails fast
    problems = load_problems(args.tasks, args.num_samples, args.question_field, args.answer_field, args.split)
    check_fewshot(problems, args.num_fewshot)
    problems = with_fewshot(problems, args.num_fewshot, args.seed)
    cfg = _config(args, problems_gen_length(problems, args.block_length))
    tok = load_tokenizer(args.model, args.trust_remote_code)
    check_prompts(tok, [p.prompt for p in problems], [p.source for p in problems], cfg.gen_length,
                  context_length(args.model))  # before the weights
    check_plans(plans, cfg, model_spec(args.model, tok))
    if args.devices * args.num_nodes > 1:  # each rank loads its own model; rank 0 writes
        from learn2pd.evaluation.parallel import evaluate_parallel

        report = evaluate_parallel({"model": args.model, "dtype": args.dtype, "device": args.device,
                                    "trust_remote_code": args.trust_remote_code}, problems, policies, cfg,
                                   args.batch_size, not args.quiet, args.devices, args.num_nodes, args.strategy)
        if report is None:
            return 0
    else:
        model, tok, spec = load_model(args.model, args.dtype, args.device, args.trust_remote_code)
        report = evaluate(model, tok, spec, problems, plans, cfg, args.batch_size, progress=not args.quiet)
    report["config"] = {"model": str(args.model or "checkpoints/tiny-llada"), "tasks": args.tasks,
                        "num_samples": len(problems), "num_fewshot": args.num_fewshot, "policies": policies,
                        "batch_size": args.batch_size,
                        "learn2pd_version": __version__, **vars(cfg)}
    table = markdown_table(report["results"])
    print(table)
    if args.output:
        write_json(out, report)
        write_atomic(table_path, table + "\n")
        plot_pareto(report["results"], plot_path)
        print(f"wrote {out}, {table_path} and {plot_path}", file=sys.stderr)
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


def cmd_calibrate(args) -> int:
    from learn2pd.decoding.policies.learned import check_fits
    from learn2pd.filters.calibrate import THRESHOLDS, calibrate, write_calibration
    from learn2pd.filters.models import load_filter
    from learn2pd.models.loading import DEFAULT_MODEL, load_model, model_config
    from learn2pd.tasks.loaders import load_problems
    from learn2pd.tasks.suite import default_gen_length

    blocks = [int(b) for b in args.block_lengths.split(",")]
    family = model_config(str(args.model or DEFAULT_MODEL))["model_type"]
    for path in [p for p in (args.filter, args.eot) if p]:  # fail before the model loads
        config = load_filter(path).config
        for block in blocks:
            check_fits(config, path, family, block)
    if not args.tasks.startswith(("val:", "train:")) and not args.allow_heldout:
        raise ValueError(f"--tasks {args.tasks}: thresholds are chosen on validation problems (val:suite), never on "
                         "the held-out ones results are reported on; --allow-heldout if this set is your own")
    thresholds = [float(t) for t in args.thresholds.split(",")] if args.thresholds else list(THRESHOLDS)
    problems = load_problems(args.tasks, args.num_samples)
    cfg = _config(args, default_gen_length(p.family for p in problems))
    model, tok, spec = load_model(args.model, args.dtype, args.device, args.trust_remote_code)
    result = calibrate(model, tok, spec, args.filter, problems, cfg, blocks, args.eot, thresholds, args.budget,
                       args.reference, args.batch_size, progress=not args.quiet)
    for b, run in result["runs"].items():
        ref = run["reference"]
        print(f"block {b}: reference {ref['plan']} {ref['accuracy']:.1f}% at {ref['nfe_mean']:.1f} NFE")
        for r in run["rows"]:
            mark = " <- chosen" if r["threshold"] == result["thresholds"][b] else ""
            print(f"  threshold {r['threshold']:.2f}: {r['accuracy']:.1f}% at {r['nfe_mean']:.2f} NFE{mark}")
        if not run["within_budget"]:
            print(f"  no threshold within {args.budget} points of the reference: the most accurate is kept")
    write_calibration(args.filter, result, args.tasks, args.overwrite)
    print(f"wrote thresholds {result['thresholds']} into {args.filter}/config.json", file=sys.stderr)
    return 0


def cmd_demo(args) -> int:
    from learn2pd.demo import run_demo

    run_demo(args.out, args.num_traces, args.num_samples, dtype=args.dtype, progress=not args.quiet,
             overwrite=args.overwrite, cache=args.cache)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="learn2pd", description="Parallel decoding for masked diffusion LLMs")
    ap.add_argument("--version", action="version", version=f"learn2pd {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="decode prompts and print text and NFE")
    g.add_argument("--prompt", action="append", required=True, help="question text (repeat for a batch)")
    g.add_argument("--policy", default="vanilla", help="e.g. vanilla, threshold:tau=0.9, factor:factor=1")
    g.add_argument("--threshold", type=Check(float, gt=0).flag("number > 0"), default=None,
                   help="tau for threshold (f for factor)")
    g.add_argument("--json", action="store_true", help="one JSON object per prompt and line (prompt, text, plan, "
                   "nfe, tokens_per_forward, latency_s) instead of the readable answers")
    _decode_args(g)
    g.set_defaults(func=cmd_generate)

    e = sub.add_parser("evaluate", help="compare policies on held-out problems")
    e.add_argument("--tasks", default="suite", help="suite, short, long, all, choice (list), families (arith,chain), "
                   "a .jsonl file, lm_eval:TASK[:FILTER] or hf:NAME[:CONFIG]")
    e.add_argument("--num-samples", type=POSITIVE, default=100, help="problems to evaluate (default 100)")
    e.add_argument("--num-fewshot", type=NON_NEGATIVE, default=0,
                   help="solved training problems of the same family before each built-in question (default 0)")
    e.add_argument("--question-field", default="question", help="HF dataset column with the question")
    e.add_argument("--answer-field", default="answer", help="HF dataset column with the answer")
    e.add_argument("--split", default="test", help="HF dataset split")
    e.add_argument("--policies", default="vanilla,threshold", help="comma-separated policy specs")
    e.add_argument("--output", default=None, help="results JSON (a .md table and .png plot go beside it)")
    e.add_argument("--overwrite", action="store_true",
                   help="replace --output files that are not an earlier evaluation's, or write inside checkpoints/")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.add_argument("--devices", type=int, default=1, help="processes per node, problems sharded over them "
                   "(Lightning Fabric; with --device cuda process i decodes on cuda:i; default 1)")
    e.add_argument("--num-nodes", type=int, default=1, help="machines of a data-parallel run (default 1)")
    e.add_argument("--strategy", default="ddp_spawn", choices=["ddp_spawn", "ddp"],
                   help="ddp_spawn: this command starts the processes (default); ddp: under torchrun or SLURM")
    e.add_argument("--wandb", action="store_true", help="log results table, Pareto plot, config and summary to "
                   "W&B (offline unless logged in; WANDB_MODE and WANDB_PROJECT are honoured)")
    e.add_argument("--wandb-dir", default="runs/evaluate", help="where the W&B run folder goes (default runs/evaluate)")
    _decode_args(e)
    e.set_defaults(func=cmd_evaluate)

    c = sub.add_parser("calibrate", help="choose a filter's threshold per block length by decoding validation problems")
    c.add_argument("--filter", required=True, help="filter folder; its config.json receives the thresholds")
    c.add_argument("--eot", default=None, help="End-of-Text predictor decoded with it (the plan gets +eotp)")
    c.add_argument("--tasks", default="val:suite", help="validation problems (default val:suite)")
    c.add_argument("--num-samples", type=POSITIVE, default=64, help="problems per block length (default 64)")
    c.add_argument("--block-lengths", default="32", help="comma-separated, e.g. 32,256 (default 32)")
    c.add_argument("--thresholds", default=None, help="candidates, comma-separated (default: "
                   "learn2pd.filters.calibrate.THRESHOLDS, 0.5 to 0.99)")
    c.add_argument("--budget", type=float, default=0.5,
                   help="accuracy points the chosen threshold may lose against the reference (default 0.5)")
    c.add_argument("--reference", default="vanilla",
                   help="the plan whose accuracy is kept (default vanilla), or `best`: the most accurate "
                   "threshold swept (no reference decode: vanilla costs gen-length forwards per problem)")
    c.add_argument("--allow-heldout", action="store_true", help="accept a task set that is not val:/train:")
    c.add_argument("--overwrite", action="store_true", help="needed for a filter inside checkpoints/")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    _decode_args(c)
    c.set_defaults(func=cmd_calibrate)

    sub.add_parser("lm-eval", help="lm-evaluation-harness with the learn2pd model registered: lm-eval's own "
                   "flags follow (see README)")

    d = sub.add_parser("demo", help="end to end on the embedded tiny dLLM: traces, filter, evaluation")
    d.add_argument("--out", default="outputs/demo", help="folder for traces, filters, logs and results "
                   "(default outputs/demo)")
    d.add_argument("--num-traces", type=POSITIVE, default=384,
                   help="training problems to collect traces on (default 384)")
    d.add_argument("--num-samples", type=POSITIVE, default=60,
                   help="held-out problems to evaluate, 12 per family at the default (default 60)")
    d.add_argument("--cache", default="dual", choices=["none", "prefix", "dual"],
                   help="KV cache of the evaluation (default dual, Fast-dLLM's, as in Learn2PD's headline; none: "
                   "every forward over the whole sequence)")
    d.add_argument("--dtype", default="auto", help="auto (bf16 where the hardware has it), float32, bfloat16")
    d.add_argument("--overwrite", action="store_true",
                   help="replace an --out that is not a demo's output, or write inside checkpoints/")
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

    def command() -> int:
        args = build_parser().parse_args(argv)
        quiet_libraries(getattr(args, "verbose", False))
        return args.func(args)

    return run_command("learn2pd", command)


if __name__ == "__main__":
    sys.exit(main())
