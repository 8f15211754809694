"""`learn2pd` as an lm-evaluation-harness model: any decoding plan on any task lm-eval runs.

    --model learn2pd --model_args pretrained=PATH,plan=learned+eotp,gen_length=256,block_length=32,cache=dual

Model arguments: `pretrained` (folder or hub id; default the embedded tiny model), `plan` (a spec string;
a spec with commas is quoted, `plan="localleap:kappa=0.8,tau=0.6+eotp"`, or written unquoted after `plan=`),
`filter` (a learned filter's folder for the plan's `learned` part), the DecodeConfig fields `gen_length`,
`block_length`, `steps`, `temperature`, `cfg_scale`, `remasking`, `seed`, `cache`, and `dtype`, `device`,
`batch_size` (prompts per decode batch and Monte-Carlo samples per forward; beats lm-eval's `--batch_size`),
`mc_num`, `is_check_greedy`, `trust_remote_code`.

Generation length: `gen_length` given, every request decodes that many positions (as the published dLLM
evaluations do, and NFE and TPF compare across tasks); a request's `max_gen_toks` then only caps the answer
at that many tokens. Without `gen_length`, a request decodes `max_gen_toks` (256 when the task names none)
rounded up to a multiple of `block_length`. Decoding settings come from the model arguments: a task's
`do_sample` / `temperature` are not used (a warning says so when they ask for sampling).

Data-parallel (`accelerate launch -m learn2pd.harness ...`, or `torchrun`): as lm-eval's HFLM, the model
reports `rank` and `world_size` from an accelerate `Accelerator`, lm-eval hands each process its shard of the
documents, each process decodes on cuda:LOCAL_RANK (on CPU-only machines, CPU processes under gloo) and
lm-eval gathers the metrics to rank 0, which writes the results. The decoding cost is gathered at lm-eval's
barriers and summed over the ranks. lm-eval pads a shorter shard with copies of its last request so every
rank runs as many; a copy is answered from its original, neither decoded nor counted again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import logging
import math
import time
from collections import Counter
from datetime import timedelta

import lm_eval.models  # noqa: F401  lm-eval fills its built-in registry only when it finds the registry empty
import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from tqdm.auto import tqdm

from learn2pd.configfile import Check
from learn2pd.decoding.batching import decode_all
from learn2pd.decoding.config import CACHES, DecodeConfig
from learn2pd.decoding.engine import decode_text
from learn2pd.decoding.plan import check_plans, make_plan
from learn2pd.distributed import check_cuda_rank, launch_env
from learn2pd.harness.cost import CostMeter
from learn2pd.harness.likelihood import greedy_matches, mc_loglikelihood
from learn2pd.tasks.lm_eval_tasks import DEFAULT_MAX_GEN_TOKS, cut_at_stops
from learn2pd.tasks.prompting import check_prompts, encode_context
from learn2pd.version import __version__

log = logging.getLogger(__name__)
# The model arguments' types and ranges: `gen_length=abc` or `trust_remote_code=maybe` is one line naming it.
MODEL_ARGS = {"gen_length": Check(int, gt=0, optional=True), "block_length": Check(int, gt=0),
              "steps": Check(int, gt=0, optional=True), "temperature": Check(float, ge=0),
              "cfg_scale": Check(float, ge=0), "remasking": Check(str, choices=("low_confidence", "random")),
              "seed": Check(int), "cache": Check(str, choices=CACHES), "mc_num": Check(int, gt=0),
              "is_check_greedy": Check(bool), "trust_remote_code": Check(bool), "plan": Check(str),
              "filter": Check(str, optional=True), "dtype": Check(str), "device": Check(str, optional=True)}


def with_filter(plan: str, path: str) -> str:
    """`learned+eotp`, `PATH` -> `learned:path=PATH+eotp`."""
    parts = plan.split("+")
    for i, part in enumerate(parts):
        name, _, params = part.partition(":")
        if name.strip() == "learned":
            parts[i] = f"learned:{','.join(p for p in (f'path={path}', params) if p)}"
            return "+".join(parts)
    raise ValueError(f"filter={path} needs a learned plan (e.g. plan=learned+eotp), got plan={plan}")


@register_model("learn2pd")
class Learn2PDLM(TemplateLM):
    def __init__(self, pretrained=None, plan: str = "vanilla", filter: str | None = None, gen_length: int | None = None,
                 block_length: int = 32, steps: int | None = None, temperature: float = 0.0, cfg_scale: float = 0.0,
                 remasking: str = "low_confidence", seed: int = 0, cache: str = "none", dtype: str = "auto",
                 device: str | None = None, batch_size: int | str = 32, max_batch_size=None, mc_num: int = 128,
                 is_check_greedy: bool = True, trust_remote_code: bool = False, tokenizer=None, spec=None):
        super().__init__()
        from learn2pd.models.loading import load_model, load_tokenizer, model_spec
        from learn2pd.models.spec import spec_from_model

        self.accelerator = None
        launch = launch_env(needs_rank=True)  # a bad launch fails before the weights load
        if launch is not None:
            device = self._join(launch, device)
        plan = str(plan)
        self.plan = make_plan(with_filter(plan, str(filter)) if filter else plan)
        self.gen_length = int(gen_length) if gen_length is not None else None
        self.config = DecodeConfig(gen_length=self.gen_length or int(block_length), block_length=int(block_length),
                                   steps=int(steps) if steps is not None else None, temperature=float(temperature),
                                   cfg_scale=float(cfg_scale), remasking=remasking, seed=int(seed), cache=cache)
        self.config.validate()
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 32  # "auto": no search, the default
        if self.batch_size <= 0:
            raise ValueError(f"model argument batch_size must be a whole number > 0 (or auto), got {batch_size!r}")
        self.mc_num, self.is_check_greedy = int(mc_num), bool(is_check_greedy)
        loaded = isinstance(pretrained, torch.nn.Module)  # a loaded model (Python API), with its tokenizer
        if loaded:
            if tokenizer is None:
                raise ValueError("a loaded model needs its tokenizer: Learn2PDLM(model, tokenizer=tok)")
            self.spec = spec or spec_from_model(pretrained, tokenizer)
        else:  # from config.json: a filter of another family fails before the weights load
            self.spec = model_spec(pretrained, load_tokenizer(pretrained, trust_remote_code))
        check_plans([self.plan], self.config, self.spec, references=False)  # the oracle needs a reference decode
        if loaded:
            self.model, self.tokenizer = pretrained, tokenizer
            self.model_name = getattr(pretrained, "name_or_path", type(pretrained).__name__)
        else:
            self.model, self.tokenizer, self.spec = load_model(pretrained, dtype, _device(device), trust_remote_code)
            self.model_name = str(pretrained or "checkpoints/tiny-llada")
        self._device = next(self.model.parameters()).device
        self.cost = CostMeter()
        self._rank_costs: list[dict] | None = None  # every rank's cost, gathered on rank 0 at lm-eval's barriers
        self._warned: set[str] = set()

    def _join(self, launch, device: str | None) -> str:
        """Join the launched run as HFLM does (an accelerate Accelerator, no time limit on a peer's decode);
        returns this process's device: cuda:LOCAL_RANK, or the CPU where there is no CUDA or it is asked for."""
        from accelerate import Accelerator
        from accelerate.utils import InitProcessGroupKwargs

        cpu = not torch.cuda.is_available() or str(device) == "cpu"
        if not cpu:
            check_cuda_rank(launch.local_rank)
        self.accelerator = Accelerator(cpu=cpu, kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(weeks=52))])
        if self.accelerator.num_processes != launch.world_size:
            raise ValueError(f"WORLD_SIZE={launch.world_size} but accelerate joined {self.accelerator.num_processes} "
                             "process(es): launch with accelerate launch or torchrun")
        self._rank, self._world_size = self.accelerator.process_index, self.accelerator.num_processes
        return "cpu" if cpu else f"cuda:{self.accelerator.local_process_index}"

    # -- lm-eval's collectives over the ranks (used only when world_size > 1) ----------------------------------------

    def all_gather(self, tensor):
        return tensor if self.world_size <= 1 else self.accelerator.gather(tensor)

    def gather_object(self, obj, dst: int = 0):
        if self.world_size <= 1:
            return [obj]
        result = [None] * self.world_size if self.rank == dst else None
        torch.distributed.gather_object(obj=obj, object_gather_list=result, dst=dst)
        return result

    def barrier(self) -> None:
        """lm-eval calls it on every rank after each request type: the ranks' costs so far go to rank 0."""
        if self.world_size > 1:
            self._rank_costs = self.gather_object(self.cost.tasks)
            self.accelerator.wait_for_everyone()

    def _answer_once(self, requests, run) -> list:
        """`run` on the requests but lm-eval's padding of a shorter shard (its last request once more, beyond the
        request's repeats): a copy gets its original's answer."""
        if self.world_size <= 1:
            return run(requests)
        seen: Counter = Counter()
        first: dict[int, int] = {}
        source = []
        for i, req in enumerate(requests):
            seen[id(req)] += 1
            first.setdefault(id(req), i)
            source.append(i if seen[id(req)] <= (getattr(req, "repeats", None) or 1) else first[id(req)])
        own = [i for i, j in enumerate(source) if i == j]
        answers = dict(zip(own, run([requests[i] for i in own])))
        return [answers[j] for j in source]

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None):
        """Model arguments win over lm-eval's `--batch_size` / `--device`; an unquoted plan spec with commas
        (`plan=localleap:kappa=0.8,tau=0.6`) arrives split into keys and is joined back."""
        known = set(inspect.signature(cls.__init__).parameters) - {"self"}
        args: dict = {}
        last = None
        for key, value in arg_dict.items():
            if key not in known and last == "plan":
                args["plan"] = f"{args['plan']},{key}={value}"
                continue
            if key not in known:
                raise ValueError(f"unknown learn2pd model argument {key!r}: choose from {', '.join(sorted(known))}")
            args[key], last = MODEL_ARGS[key](value, f"model argument {key}") if key in MODEL_ARGS else value, key
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in args}
        return cls(**args, **extra)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    # -- tokenization and chat templates (lm-eval's hooks) ------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self.spec.eos_id

    @property
    def prefix_token_id(self) -> int:  # what an empty context becomes in loglikelihood
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.spec.eos_id

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return encode_context(self.tokenizer, string, add_special_tokens)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(f"the tokenizer of {self.model_name} has no chat template: run without "
                             "--apply_chat_template")
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt,
                                                  continue_final_message=not add_generation_prompt)

    # -- generation -------------------------------------------------------------------------------------------------

    def _gen_length(self, kwargs: dict) -> int:
        if self.gen_length is not None:
            return self.gen_length
        wanted = int(kwargs.get("max_gen_toks") or DEFAULT_MAX_GEN_TOKS)
        return math.ceil(wanted / self.config.block_length) * self.config.block_length

    def _prompt_ids(self, context: str, gen_length: int) -> list[int]:
        ids = self.tok_encode(context)
        room = (self.spec.context_length or 0) - gen_length
        if self.spec.context_length and len(ids) > room:
            if room <= 0:
                raise ValueError(f"gen_length {gen_length} leaves no room for a prompt in the model's context of "
                                 f"{self.spec.context_length} tokens")
            self._warn("truncate", f"prompts longer than {room} tokens are cut from the left to fit gen_length "
                                   f"{gen_length} in the model's context of {self.spec.context_length}")
            ids = ids[-room:]
        return ids

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("learn2pd: %s", message)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        return self._answer_once(requests, lambda own: self._generate(own, disable_tqdm))

    def _generate(self, requests, disable_tqdm: bool) -> list[str]:
        torch.manual_seed(self.config.seed)
        groups: dict[tuple[str, int], list[int]] = {}
        for i, req in enumerate(requests):
            kwargs = req.args[1] or {}
            if kwargs.get("do_sample") or float(kwargs.get("temperature") or 0) > 0:
                self._warn("sampling", "the task asks for sampling; decoding uses the model arguments' temperature "
                                       f"({self.config.temperature})")
            groups.setdefault((req.task_name or "", self._gen_length(kwargs)), []).append(i)
        texts: list = [None] * len(requests)
        bar = tqdm(total=len(requests), desc="learn2pd generate", disable=disable_tqdm)
        for (task, gen_length), idx in groups.items():  # one task at a time: its cost is its own
            cfg = dataclasses.replace(self.config, gen_length=gen_length)
            # the check every entry point makes (a prompt over the context is cut from the left, as lm-eval does)
            check_prompts(self.tokenizer, [requests[i].args[0] for i in idx], [f"{task} request {i}" for i in idx])
            encoded = [self._prompt_ids(requests[i].args[0], gen_length) for i in idx]
            out = decode_all(self.model, self.tokenizer, self.spec, encoded, self.plan, cfg, self.batch_size,
                             on_batch=bar.update)
            self.cost.add_generation(task, out, gen_length, self.spec.end_ids)
            for row, i in enumerate(idx):
                context, kwargs = requests[i].args[0], requests[i].args[1] or {}
                cap = kwargs.get("max_gen_toks")
                text = decode_text(self.tokenizer, self.spec, out.sequences[row][:int(cap) if cap else None])
                texts[i] = cut_at_stops(text, kwargs.get("until"))
                self.cache_hook.add_partial("generate_until", (context, kwargs), texts[i])
        bar.close()
        return texts

    # -- likelihoods ------------------------------------------------------------------------------------------------

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        def run(own):
            self._ll_tasks = [req.task_name or "" for req in own]  # per request, for the cost of its task
            return TemplateLM.loglikelihood(self, own, disable_tqdm=disable_tqdm)

        return self._answer_once(requests, run)

    def _fit(self, context: list[int], target: list[int]) -> tuple[list[int], list[int]]:
        room = (self.spec.context_length or 0) - len(target)
        if self.spec.context_length and len(context) > room:
            self._warn("truncate_ll", f"loglikelihood contexts are cut from the left to fit the model's context of "
                                      f"{self.spec.context_length}")
            context = context[-room:] if room > 0 else []
        return context, target

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        tasks = getattr(self, "_ll_tasks", None) or [""] * len(requests)
        pairs = [self._fit(list(ctx), list(cont)) for _, ctx, cont in requests]
        scores = []
        for (prefix, target), task in zip(tqdm(pairs, desc="learn2pd loglikelihood", disable=disable_tqdm), tasks):
            t0 = time.perf_counter()
            scores.append(mc_loglikelihood(self.model, self.spec, prefix, target, self.mc_num, self.batch_size,
                                           request_generator(self.config.seed, prefix, target), self.config.cfg_scale))
            # Monte-Carlo batches, then the greedy check's one token per forward
            forwards = (math.ceil(self.mc_num / self.batch_size) + len(target) * self.is_check_greedy) if target else 0
            self.cost.add_loglikelihood(task, forwards, time.perf_counter() - t0)
        greedy = (greedy_matches(self.model, self.tokenizer, self.spec, pairs, self.batch_size, self.config.cfg_scale)
                  if self.is_check_greedy else [False] * len(pairs))
        results = list(zip(scores, greedy))
        for (key, _, _), res in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", key, res)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError(
            "learn2pd: loglikelihood_rolling (perplexity tasks such as wikitext) is not implemented: a masked "
            "diffusion model gives no left-to-right token probabilities, and the Monte-Carlo bound behind "
            "loglikelihood is not a per-token perplexity. Run generation or multiple-choice tasks.")

    # -- reported with lm-eval's results (results["config"]["learn2pd"]) --------------------------------------------

    def get_model_info(self) -> dict:
        return {"learn2pd": {
            "version": __version__, "model": self.model_name, "plan": self.plan.describe(),
            "plan_spec": self.plan.label,
            "decode": {**dataclasses.asdict(self.config), "gen_length": self.gen_length},
            "gen_length_rule": "model_args" if self.gen_length is not None else "max_gen_toks rounded up to blocks",
            "batch_size": self.batch_size, "mc_num": self.mc_num, "is_check_greedy": self.is_check_greedy,
            "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
            "processes": self.world_size,
            "decoding_cost": (CostMeter.total(self._rank_costs) if self._rank_costs else self.cost).summary(),
        }}


def request_generator(seed: int, prefix: list[int], target: list[int]) -> torch.Generator:
    """The Monte-Carlo masks of one request, drawn from the seed and the request's tokens: a score does not
    depend on which requests came before it, so a rank's shard scores as the whole run does."""
    digest = hashlib.sha256(f"{seed}|{prefix}|{target}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _device(device: str | None) -> str:
    """lm-eval's CLI asks for cuda:0 unless told otherwise: fall back to the CPU where there is no CUDA."""
    if device is None or (str(device).startswith("cuda") and not torch.cuda.is_available()):
        if device is not None:
            log.warning("learn2pd: %s is not available, decoding on the CPU", device)
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)
