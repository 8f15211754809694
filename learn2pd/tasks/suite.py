"""The built-in synthetic task suite: verifiable problems whose answers have variable length.

Five families, each a pure function of a seeded RNG. Three have short answers (3-38 characters, one
32-token block):
- `arith`: a chain of single-digit operations mod 10 with worked steps, one per line. Each line needs
  the previous line's result, so committing many lines in parallel is costly (a dLLM guesses). The
  suite keeps chains of 3-6 steps: the embedded model computes about two steps in one forward, so a
  2-step chain costs nothing to commit at once and measures nothing about parallel decoding.
- `sort`: sort a list of digits.
- `rev`: reverse a string of letters.
Two have long answers (66-191 characters: 3-7 blocks of 32, where block schedules, caches, End-of-Text
Prediction and a filter that must judge later blocks all matter). They share one line format,
`label:x op y=z` (labels a, b, c, ... up to the last label the prompt names), and differ only in what a
line depends on:
- `chain` (serial): `chain p a:3+7=? b:?-6=? c:?+2=? ... p:?+9=?` gives a start value and 16
  operations (always 16: unused ones after the last label); each line applies its operation to the
  previous line's result (`a:3+7=0`, `b:0-6=4`, `c:4+2=6`, ...) up to the last label, then `#` and the
  last result. Every line needs fresh input and the result above it: a line cannot be known before the
  one above, what chain-of-thought answers look like, and where committing many tokens per forward
  costs accuracy. Graded on the final value, as GSM8K is.
- `table` (parallel): `table h a:9+1=? b:5+0=? c:1-7=? d:6-3=?` gives four operations; the answer
  writes them out with their results and cycles through them up to the last label (`a:9+1=0`,
  `b:5+0=5`, `c:1-7=4`, `d:6-3=3`, `e:9+1=0`, ...). Line k repeats line k-4 but for its label: long
  copied stretches, four computed results, nothing serial. Graded on the whole answer.
Every input of a line sits at a fixed distance: the prompt's item of the same label exactly 128 tokens
back and the result 4 tokens back (chain), or exactly 32 tokens back (table: the prompt's item of the
same label for lines 1-4, line k-4 after). Two earlier designs made lines look an operation up by its
place among the prompt's (the k-th of 24, or the (k mod 4)-th of 4); the tiny model learnt neither in
900-3,500 CPU training steps. A third chain, fixed by its first two numbers (each line combined the two
above), had 100 distinct chains: writing one in a forward was recall, not parallel decoding (README).
A sixth family, `list` (the `choice` group), is not in the suite the shipped model learnt: it is the testbed
for a phenomenon real dLLMs show and the five do not, several correct answers. `list k?q?z?x` asks for the
letters with a separator between them, `,` or `;` freely (drawn at random in training, so the model's
confidence on every separator is split about evenly), graded as either: a confidence threshold waits on
every separator, while committing any of them is safe. The prompt is answer-shaped and fixed-width
(`list a?b?c......`: `?` where a separator goes, `.` after the last letter), so every answer letter sits at
one distance from its prompt copy.
`short` and `long` select the two groups; `suite` (and `all`) means all five, what the embedded model
is trained on.

Held-out problems come from a separate seed and are excluded from the training stream.

Sizes: the generators draw from fixed wide ranges (`DRAW`), and the suite keeps the problems within
`SIZES` (3-6 steps, 3-7 digits, 3-8 letters, 8-16 chain lines, 10-24 table lines). Filtering, rather
than drawing from narrower ranges, keeps every stream's problems and the held-out exclusion set the
same whatever sizes a caller asks for: the tiny model's first training stages used the wide ranges and
never saw a held-out problem.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

SHORT_FAMILIES = ("arith", "sort", "rev")
LONG_FAMILIES = ("chain", "table")
FAMILIES = SHORT_FAMILIES + LONG_FAMILIES
# `suite` is what the shipped tiny LLaDA is trained on and evaluated with by default
SUITE = FAMILIES
# several correct answers (graded up to the separator's choice): not part of the suite, see `list` above
CHOICE_FAMILIES = ("list",)
GROUPS = {"suite": SUITE, "short": SHORT_FAMILIES, "long": LONG_FAMILIES, "all": FAMILIES,
          "choice": CHOICE_FAMILIES}
# default decoding region: every short answer fits one 32-token block of 128, a long one needs 256
SHORT_GEN_LENGTH, LONG_GEN_LENGTH = 128, 256
TRAIN_SEED = 0
# validation: a training-side stream of its own (never held out), for choices made by decoding (thresholds)
VAL_SEED = 2_000_029
HELDOUT_SEED = 1_000_003
HELDOUT_POOL = 2000  # per family: the first problems of the held-out stream, never trained on


@dataclass(frozen=True)
class Problem:
    family: str
    prompt: str  # the question, without chat markup
    answer: str  # the full expected answer text (worked steps included)
    # output -> correct; a benchmark's own grader (an lm-eval task's filters and metric). None: `is_correct`.
    grader: Callable[[str], bool] | None = field(default=None, compare=False, repr=False)
    source: str = field(default="", compare=False, repr=False)  # FILE:LINE of a JSONL problem (named in errors)
    max_gen_toks: int | None = field(default=None, compare=False, repr=False)  # a benchmark task's answer budget

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
    if family == "list":  # either separator is right
        return text.replace(LIST_SEPARATORS[1], LIST_SEPARATORS[0])
    return text


def is_correct(problem: Problem, output: str) -> bool:
    got = final_answer(problem.family, output)
    return got != "" and got == problem.target


# what the generators draw
DRAW = {"arith": (2, 6), "sort": (3, 10), "rev": (3, 12), "chain": (8, 16), "table": (8, 24), "list": (3, 12)}
# what the suite keeps
SIZES = {"arith": (3, 6), "sort": (3, 7), "rev": (3, 8), "chain": (8, 16), "table": (10, 24), "list": (4, 10)}
LIST_SEPARATORS = ",;"
LABELS = "abcdefghijklmnopqrstuvwxyz"
PERIOD = 4  # table cycles through the 4 operations its prompt gives
CHAIN_ITEMS = 16  # operations a chain prompt gives, whatever its length: line k reads item k 128 tokens back


def size(problem: Problem) -> int:
    """Steps (arith, chain), digits (sort), letters (rev) or operations (table)."""
    if problem.family in ("arith", "chain"):
        return problem.answer.count("\n")
    if problem.family == "table":
        return problem.answer.count("\n") + 1
    if problem.family == "list":
        return len(problem.answer) // 2 + 1
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


def _chain(rng: random.Random) -> Problem:
    start = value = rng.randint(0, 9)
    ops = [(rng.choice("+-"), rng.randint(0, 9)) for _ in range(CHAIN_ITEMS)]
    labels = LABELS[: rng.randint(*DRAW["chain"])]
    lines = []
    for label, (op, y) in zip(labels, ops):
        new = _apply(value, op, y)
        lines.append(f"{label}:{value}{op}{y}={new}")
        value = new
    # Answer-shaped 8-character items (the start value in the first), so each line has its label, sign
    # and operand exactly 8 * CHAIN_ITEMS tokens back and the result it starts from 4 tokens back.
    given = " ".join(f"{label}:{start if k == 0 else '?'}{op}{y}=?"
                     for k, (label, (op, y)) in enumerate(zip(LABELS, ops)))
    return Problem("chain", f"chain {labels[-1]} {given}", "\n".join(lines) + f"\n#{value}")


def _table(rng: random.Random) -> Problem:
    rows = [(rng.randint(0, 9), rng.choice("+-"), rng.randint(0, 9)) for _ in range(PERIOD)]
    labels = LABELS[: rng.randint(*DRAW["table"])]
    lines = [f"{label}:{x}{op}{y}={_apply(x, op, y)}" for label, (x, op, y) in zip(labels, itertools.cycle(rows))]
    # Given as answer-shaped 8-character items, so every answer line has the text it copies exactly 32
    # tokens before it: the prompt's item of its label (lines 1-4) or line k-4.
    given = " ".join(f"{line[:-1]}?" for line in lines[:PERIOD])
    return Problem("table", f"table {labels[-1]} {given}", "\n".join(lines))


def _list(rng: random.Random) -> Problem:
    letters = [rng.choice(LABELS) for _ in range(rng.randint(*DRAW["list"]))]
    seps = [rng.choice(LIST_SEPARATORS) for _ in letters[1:]]
    answer = letters[0] + "".join(sep + letter for sep, letter in zip(seps, letters[1:]))
    # Answer-shaped and fixed-width (`.` after the last letter): every answer letter sits at the same distance
    # from its prompt copy whatever the list's length, as the long families' inputs do.
    given = "?".join(letters)
    return Problem("list", "list " + given + "." * (2 * DRAW["list"][1] - 1 - len(given)), answer)


GENERATORS = {"arith": _arith, "sort": _sort, "rev": _rev, "chain": _chain, "table": _table, "list": _list}


def default_gen_length(families) -> int:
    """The region the given families' answers fit: 256 when any is a long family, else 128."""
    return LONG_GEN_LENGTH if set(families) & set(LONG_FAMILIES) else SHORT_GEN_LENGTH


def problems_gen_length(problems, block_length: int) -> int:
    """The region to decode `problems` in: a benchmark task's own `max_gen_toks` (rounded up to whole blocks),
    as `learn2pd lm-eval` decodes it, when the problems name one; else `default_gen_length` of the families."""
    problems = list(problems)
    asked = [p.max_gen_toks for p in problems if p.max_gen_toks]
    if asked:
        return -(-max(asked) // block_length) * block_length
    return default_gen_length(p.family for p in problems)


def _check_families(families) -> tuple[str, ...]:
    families = tuple(families)
    unknown = [f for f in families if f not in GENERATORS]
    if unknown or not families:
        raise ValueError(f"unknown task family {unknown or families}: choose from {', '.join(GENERATORS)} "
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
