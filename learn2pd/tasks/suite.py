"""The built-in synthetic task suite: verifiable problems whose answers have variable length.

Five families, each a pure function of a seeded RNG. Three have short answers (3-38 characters, one
32-token block):
- `arith`: a chain of single-digit operations mod 10 with worked steps, one per line. Each line needs
  the previous line's result, so committing many lines in parallel is costly (a dLLM guesses). The
  suite keeps chains of 3-6 steps: the embedded model computes about two steps in one forward, so a
  2-step chain costs nothing to commit at once and measures nothing about parallel decoding.
- `sort`: sort a list of digits.
- `rev`: reverse a string of letters.
Two have long answers (79-194 characters: 3-7 blocks of 32, where block schedules, caches, End-of-Text
Prediction and a filter that must judge later blocks all matter). They share one line format,
`label:x op y=z` (labels a, b, c, ... up to the last label the prompt names; operations cycle through
the prompt's 4 signs), and differ only in what a line depends on:
- `chain` (serial): `chain 37 +--+ p` starts from the pair 3, 7; each line applies the next sign to the
  previous line's two last numbers (`a:3+7=0`, `b:7-0=7`, `c:0-7=3`, ...), then `#` and the last result.
  A line cannot be known before the one above it: what chain-of-thought answers look like, and where
  committing many tokens per forward costs accuracy. Graded on the final value, as GSM8K is.
- `table` (parallel): `table 9516 1073 ++-- h` pairs the i-th digits of the two numbers with the i-th
  sign, cycling (`a:9+1=0`, `b:5+0=5`, `c:1-7=4`, `d:6-3=3`, `e:9+1=0`, ...). Every line is a function
  of the prompt and its label alone, and line k repeats line k-4: long copied stretches, a few computed
  results, nothing serial. Graded on the whole answer.
Most of what a line needs sits at a fixed distance (the line above, four lines above); only lines 1-4
read the prompt's first four places. A first design that made line k look the k-th of up to 24
operations up in the prompt was not learnt by the tiny model in 900 training steps.
`short` and `long` select the two groups, `all` both; `suite` is the short group for now (the
embedded model is not trained on the long families yet).

Held-out problems come from a separate seed and are excluded from the training stream.

Sizes: the generators draw from fixed wide ranges (`DRAW`), and the suite keeps the problems within
`SIZES` (3-6 steps, 3-7 digits, 3-8 letters, 10-24 lines). Filtering, rather than drawing from narrower ranges,
keeps every stream's problems and the held-out exclusion set the same whatever sizes a caller asks
for: the tiny model's first training stages used the wide ranges and never saw a held-out problem.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

SHORT_FAMILIES = ("arith", "sort", "rev")
LONG_FAMILIES = ("chain", "table")
FAMILIES = SHORT_FAMILIES + LONG_FAMILIES
# `suite` is what the shipped tiny models are trained on: the short families until the embedded model
# learns the long ones (see the README), then all five.
SUITE = SHORT_FAMILIES
GROUPS = {"suite": SUITE, "short": SHORT_FAMILIES, "long": LONG_FAMILIES, "all": FAMILIES}
TRAIN_SEED = 0
HELDOUT_SEED = 1_000_003
HELDOUT_POOL = 2000  # per family: the first problems of the held-out stream, never trained on


@dataclass(frozen=True)
class Problem:
    family: str
    prompt: str  # the question, without chat markup
    answer: str  # the full expected answer text (worked steps included)
    # output -> correct; a benchmark's own grader (an lm-eval task's filters and metric). None: `is_correct`.
    grader: Callable[[str], bool] | None = field(default=None, compare=False, repr=False)

    @property
    def target(self) -> str:
        """The part of the answer that is checked."""
        return final_answer(self.family, self.answer)

    def grade(self, output: str) -> bool:
        return bool(self.grader(output)) if self.grader is not None else is_correct(self, output)


def final_answer(family: str, text: str) -> str:
    text = text.strip()
    if family == "numeric":  # GSM8K style: the reference after '####', a model's last number
        if "####" in text:
            text = text.rsplit("####", 1)[-1]
        numbers = re.findall(r"-?\d[\d,]*(?:\.\d+)?", text)
        return numbers[-1].replace(",", "").rstrip(".") if numbers else ""
    if family in ("arith", "chain"):
        return text.rsplit("#", 1)[-1].strip() if "#" in text else ""
    return text


def is_correct(problem: Problem, output: str) -> bool:
    got = final_answer(problem.family, output)
    return got != "" and got == problem.target


# what the generators draw
DRAW = {"arith": (2, 6), "sort": (3, 10), "rev": (3, 12), "chain": (8, 24), "table": (8, 24)}
# what the suite keeps
SIZES = {"arith": (3, 6), "sort": (3, 7), "rev": (3, 8), "chain": (10, 24), "table": (10, 24)}
LABELS = "abcdefghijklmnopqrstuvwxyz"
PERIOD = 4  # chain and table cycle through 4 operations given in the prompt


def size(problem: Problem) -> int:
    """Steps (arith, chain), digits (sort), letters (rev) or operations (table)."""
    if problem.family in ("arith", "chain"):
        return problem.answer.count("\n")
    if problem.family == "table":
        return problem.answer.count("\n") + 1
    return len(problem.prompt.split()) - 1 if problem.family == "sort" else len(problem.prompt.split()[1])


def _arith(rng: random.Random) -> Problem:
    n_ops = rng.randint(*DRAW["arith"])
    value = rng.randint(0, 9)
    prompt, lines = f"arith {value}", []
    for _ in range(n_ops):
        op, operand = rng.choice("+-"), rng.randint(0, 9)
        new = _apply(value, op, operand)
        prompt += f"{op}{operand}"
        lines.append(f"{value}{op}{operand}={new}")
        value = new
    return Problem("arith", prompt, "\n".join(lines) + f"\n#{value}")


def _sort(rng: random.Random) -> Problem:
    digits = [rng.randint(0, 9) for _ in range(rng.randint(*DRAW["sort"]))]
    return Problem("sort", "sort " + " ".join(map(str, digits)), " ".join(map(str, sorted(digits))))


def _rev(rng: random.Random) -> Problem:
    word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(*DRAW["rev"])))
    return Problem("rev", "rev " + word, word[::-1])


def _apply(value: int, op: str, operand: int) -> int:
    return (value + operand) % 10 if op == "+" else (value - operand) % 10


def _pattern(rng: random.Random) -> str:
    return "".join(rng.choice("+-") for _ in range(PERIOD))


def _chain(rng: random.Random) -> Problem:
    x, y, ops = rng.randint(0, 9), rng.randint(0, 9), _pattern(rng)
    labels = LABELS[: rng.randint(*DRAW["chain"])]
    prompt, lines = f"chain {x}{y} {ops} {labels[-1]}", []
    for k, label in enumerate(labels):
        op = ops[k % PERIOD]
        z = _apply(x, op, y)
        lines.append(f"{label}:{x}{op}{y}={z}")
        x, y = y, z
    return Problem("chain", prompt, "\n".join(lines) + f"\n#{y}")


def _table(rng: random.Random) -> Problem:
    firsts, seconds = (f"{rng.randrange(10 ** PERIOD):0{PERIOD}d}" for _ in range(2))
    ops = _pattern(rng)
    labels = LABELS[: rng.randint(*DRAW["table"])]
    lines = []
    for k, label in enumerate(labels):
        i = k % PERIOD
        lines.append(f"{label}:{firsts[i]}{ops[i]}{seconds[i]}={_apply(int(firsts[i]), ops[i], int(seconds[i]))}")
    return Problem("table", f"table {firsts} {seconds} {ops} {labels[-1]}", "\n".join(lines))


GENERATORS = {"arith": _arith, "sort": _sort, "rev": _rev, "chain": _chain, "table": _table}


def _check_families(families) -> tuple[str, ...]:
    families = tuple(families)
    unknown = [f for f in families if f not in GENERATORS]
    if unknown or not families:
        raise ValueError(f"unknown task family {unknown or families}: choose from {', '.join(FAMILIES)} "
                         f"or a group ({', '.join(GROUPS)})")
    return families


def _stream(family: str, seed: int):
    rng = random.Random(f"{family}:{seed}")
    while True:
        yield GENERATORS[family](rng)


@cache
def _heldout_draws(family: str) -> tuple[Problem, ...]:
    """The first HELDOUT_POOL draws of the held-out stream, all sizes: never trained on."""
    stream = _stream(family, HELDOUT_SEED)
    return tuple(next(stream) for _ in range(HELDOUT_POOL))


@cache
def _heldout_prompts(family: str) -> frozenset[str]:
    return frozenset(p.prompt for p in _heldout_draws(family))


def _within(problem: Problem, sizes) -> bool:
    lo, hi = (sizes or SIZES)[problem.family]
    return lo <= size(problem) <= hi


def heldout_problems(families=SUITE, n: int = 500, sizes: dict | None = None) -> list[Problem]:
    """`n` held-out problems, families interleaved (arith, sort, rev, arith, ...), deterministic."""
    families = _check_families(families)
    pools = {f: [p for p in _heldout_draws(f) if _within(p, sizes)] for f in families}
    room = len(families) * min(len(p) for p in pools.values())
    if n > room:
        raise ValueError(f"at most {room} held-out problems for {families}, asked {n}")
    return [pools[families[i % len(families)]][i // len(families)] for i in range(n)]


def train_problems(families=SUITE, seed: int = TRAIN_SEED, sizes: dict | None = None):
    """An endless, seeded stream of training problems (families in turn), never a held-out one."""
    families = _check_families(families)
    streams = [_stream(f, seed) for f in families]
    while True:
        for fam, stream in zip(families, streams):
            problem = next(stream)
            while problem.prompt in _heldout_prompts(fam) or not _within(problem, sizes):
                problem = next(stream)
            yield problem
