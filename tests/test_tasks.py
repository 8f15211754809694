import itertools

import pytest

from learn2pd.tasks.prompting import format_prompt
from learn2pd.tasks.suite import (
    FAMILIES,
    LONG_FAMILIES,
    SIZES,
    SUITE,
    Problem,
    heldout_problems,
    is_correct,
    size,
    train_problems,
)


def test_arith_worked_steps_are_consistent():
    for p in heldout_problems(("arith",), 200):
        lines = p.answer.split("\n")
        value = int(p.prompt.split()[1][0])
        for line in lines[:-1]:
            lhs, result = line.split("=")
            a, op, b = int(lhs[0]), lhs[1], int(lhs[2])
            assert a == value
            value = (a + b) % 10 if op == "+" else (a - b) % 10
            assert int(result) == value
        assert lines[-1] == f"#{value}" and p.target == str(value)


def _parse(line: str) -> tuple[str, int, str, int, int]:
    label, work = line.split(":")
    lhs, result = work.split("=")
    return label, int(lhs[0]), lhs[1], int(lhs[2]), int(result)


def _mod(x: int, op: str, y: int) -> int:
    return (x + y) % 10 if op == "+" else (x - y) % 10


def test_chain_lines_apply_the_prompts_operations_to_the_result_above():
    signs, starts = set(), set()
    for p in heldout_problems(("chain",), 200):
        _, last, *given = p.prompt.split()
        lines = p.answer.split("\n")
        assert [g[:2] for g in given] == [f"{c}:" for c in "abcdefghijklmnop"]  # always 16 operations
        assert [line[0] for line in lines[:-1]] == list("abcdefghijklmnop"[: len(lines) - 1])
        assert lines[-2][0] == last  # the prompt names the last line
        x = int(given[0][2])  # the start value, in the first item only
        assert all(g[2] == "?" and g.endswith("=?") for g in given[1:])
        starts.add(x)
        for line, item in zip(lines[:-1], given):
            label, a, op, b, z = _parse(line)
            assert (a, op, b) == (x, item[3], int(item[4]))  # serial: the result above, fresh operation
            assert z == _mod(a, op, b)
            signs.add(op)
            x = z
        assert lines[-1] == f"#{x}" and p.target == str(x)
        assert is_correct(p, "anything\n#" + str(x)) and not is_correct(p, p.answer[:-1] + str((x + 1) % 10))
    assert signs == {"+", "-"} and starts == set(range(10))
    # no two held-out chains alike (the previous design had 100 chains in all: recall, not computation)
    assert len({p.answer for p in heldout_problems(("chain",), 500)}) == 500


def test_table_writes_out_the_prompts_four_operations_cyclically():
    for p in heldout_problems(("table",), 200):
        _, last, *given = p.prompt.split()
        assert [g[:2] for g in given] == ["a:", "b:", "c:", "d:"] and all(g.endswith("=?") for g in given)
        lines = p.answer.split("\n")
        assert lines[-1][0] == last
        for k, line in enumerate(lines):
            label, a, op, b, z = _parse(line)
            assert line[:-1] == f"{label}:{given[k % 4][2:-1]}" and z == _mod(a, op, b)
            if k >= 4:
                assert line[1:] == lines[k - 4][1:]  # line k repeats line k-4 but for its label
        wrong_line = p.answer[:-1] + str((int(p.answer[-1]) + 1) % 10)
        assert is_correct(p, p.answer) and not is_correct(p, wrong_line)


@pytest.mark.parametrize(("family", "distance"), [("table", 32), ("chain", 128)])
def test_every_long_line_has_what_it_copies_at_a_fixed_distance(tiny, family, distance):
    _, tok, _ = tiny
    for p in heldout_problems((family,), 50):
        prompt = format_prompt(tok, p.prompt)
        ids = prompt + tok(p.answer, add_special_tokens=False).input_ids
        for k in range(len(p.answer.split("\n")) - (family == "chain")):
            start = len(prompt) + 8 * k  # one token per character, 8 per line with its newline
            if family == "table":  # all but the label (lines 5+) / the result (lines 1-4)
                copied = range(start + 1, start + 7) if k >= 4 else range(start, start + 6)
            else:  # label, sign, operand (and line 1's start value); then the result above, 4 back
                copied = [start, start + 1, start + 3, start + 4, start + 5] + ([start + 2] if k == 0 else [])
                assert k == 0 or ids[start + 2] == ids[start + 2 - 4]
            assert [ids[i] for i in copied] == [ids[i - distance] for i in copied], (p.prompt, k)


def test_long_families_span_several_blocks_of_32():
    problems = heldout_problems(LONG_FAMILIES, 400)
    lengths = sorted(len(p.answer) for p in problems)  # characters = tokens of the embedded tokenizer
    assert lengths[len(lengths) // 2] >= 64 and 64 <= lengths[0] and lengths[-1] <= 220
    assert all(SIZES[p.family][0] <= size(p) <= SIZES[p.family][1] for p in problems)
    assert {size(p) for p in problems if p.family == "chain"} == set(range(8, 17))


def test_groups_name_their_families():
    from learn2pd.tasks.loaders import load_problems

    assert [p.family for p in load_problems("long", 4)] == ["chain", "table"] * 2
    assert [p.family for p in load_problems("short", 3)] == ["arith", "sort", "rev"]
    assert load_problems("suite", 10) == heldout_problems(SUITE, 10) == heldout_problems(n=10)
    assert load_problems("all", 10) == heldout_problems(FAMILIES, 10)
    assert load_problems("arith,long", 6) == heldout_problems(("arith", "chain", "table"), 6)
    held = {p.prompt for p in heldout_problems(LONG_FAMILIES, 1000)}
    train = load_problems("train:long", 200)
    assert {p.family for p in train} == set(LONG_FAMILIES) and not held & {p.prompt for p in train}


def test_list_has_several_right_answers_and_fixed_distance_copies(tiny):
    """`list`: letters with a free `,` or `;` between them, graded as either; outside the suite the shipped
    model learnt; every answer letter sits one fixed distance from its prompt copy."""
    from learn2pd.tasks.loaders import load_problems

    _, tok, _ = tiny
    problems = heldout_problems(("list",), 300)
    assert {len(p.prompt) for p in problems} == {28} and {size(p) for p in problems} == set(range(4, 11))
    seps = "".join(p.answer[1::2] for p in problems)
    assert set(seps) == {",", ";"} and 0.4 < seps.count(",") / len(seps) < 0.6  # drawn evenly
    distances = set()
    for p in problems:
        letters = p.prompt.split()[1].rstrip(".").split("?")
        assert p.answer[::2] == "".join(letters)
        prompt, text = format_prompt(tok, p.prompt), tok(p.prompt, add_special_tokens=False).input_ids
        start = next(i for i in range(len(prompt)) if prompt[i:i + len(text)] == text)
        # answer letter k is token len(prompt) + 2k, its prompt copy token start + 5 + 2k
        distances |= {(len(prompt) + 2 * k) - (start + 5 + 2 * k) for k in range(len(letters))}
        assert all(prompt[start + 5 + 2 * k] == tok.convert_tokens_to_ids(c) for k, c in enumerate(letters))
        swapped = p.answer.translate(str.maketrans(",;", ";,"))
        assert p.grade(p.answer) and p.grade(swapped) and p.grade(swapped.replace(";", ","))
        assert not p.grade(p.answer[:-1]) and not p.grade(p.answer.replace(",", " ").replace(";", " "))
        assert not p.grade(p.answer[::-1] if p.answer[::-1] != p.answer else p.answer + ",a")
    assert len(distances) == 1
    assert "list" not in SUITE and [p.family for p in load_problems("choice", 3)] == ["list"] * 3
    held = {p.prompt for p in heldout_problems(("list",), 1000)}
    assert not held & {p.prompt for p in load_problems("train:list", 500)}


def test_sort_and_rev_answers():
    for p in heldout_problems(("sort", "rev"), 100):
        body = p.prompt.split(" ", 1)[1]
        if p.family == "sort":
            assert p.answer == " ".join(sorted(body.split()))
        else:
            assert p.answer == body[::-1]


def test_heldout_is_deterministic_interleaved_and_never_trained_on():
    a, b = heldout_problems(n=30), heldout_problems(n=30)
    assert a == b
    assert [p.family for p in a[: len(SUITE)]] == list(SUITE)
    held = {p.prompt for p in heldout_problems(n=3000)}
    train = list(itertools.islice(train_problems(), 6000))
    assert not held & {p.prompt for p in train}
    assert len({len(p.answer) for p in train}) > 10  # variable answer lengths


def test_sizes_filter_streams_without_touching_the_heldout_exclusion():
    wide = {"arith": (2, 6), "sort": (3, 10), "rev": (3, 12), "chain": (8, 24), "table": (8, 24)}
    suite = list(itertools.islice(train_problems(), 600))
    assert all(SIZES[p.family][0] <= size(p) <= SIZES[p.family][1] for p in suite)
    assert {size(p) for p in suite if p.family == "rev"} == set(range(3, 9))
    # a wide-size stream (the tiny model's first training stages) never yields a held-out problem either,
    # whichever sizes the held-out set is read at
    wide_train = {p.prompt for p in itertools.islice(train_problems(sizes=wide), 6000)}
    assert max(size(p) for p in itertools.islice(train_problems(sizes=wide), 600)) > 8
    assert not wide_train & {p.prompt for p in heldout_problems(n=3000)}
    assert not wide_train & {p.prompt for p in heldout_problems(n=3000, sizes=wide)}
    # the suite's held-out set is the wide held-out set's small problems, in the same order
    small = [p for p in heldout_problems(("rev",), 1000, sizes=wide) if size(p) <= 8]
    assert heldout_problems(("rev",), len(small)) == small


def test_checker_uses_final_answer_for_arith():
    p = Problem("arith", "arith 1+2", "1+2=3\n#3")
    assert is_correct(p, "1+2=4\n#3")  # worked steps are not graded, the final answer is
    assert not is_correct(p, "1+2=3\n#4")
    assert not is_correct(p, "")
    assert is_correct(Problem("rev", "rev ab", "ba"), " ba ")


def test_unknown_family_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown task family"):
        heldout_problems(("algebra",), 3)


def test_gsm8k_style_grading():
    p = Problem("numeric", "q", "She has 3 + 4 = 7 apples.\n#### 1,234")
    assert p.target == "1234"
    assert is_correct(p, "so the answer is 1,234.")
    assert not is_correct(p, "1234 then 5")


def test_hf_dataset_from_local_folder(tmp_path):
    import datasets

    from learn2pd.tasks.loaders import load_problems

    ds = datasets.DatasetDict({"test": datasets.Dataset.from_dict(
        {"question": ["a?", "b?", "c?"], "answer": ["x #### 1", "y #### 2", "z #### 3"]})})
    ds.save_to_disk(tmp_path / "gsm")
    probs = load_problems(f"hf:{tmp_path / 'gsm'}", 2)
    assert [(p.prompt, p.target) for p in probs] == [("a?", "1"), ("b?", "2")]
    with pytest.raises(ValueError, match="--question-field"):
        load_problems(f"hf:{tmp_path / 'gsm'}", 2, question_field="problem")
    with pytest.raises(ValueError, match="no split"):
        load_problems(f"hf:{tmp_path / 'gsm'}", 2, split="train")


def test_jsonl_tasks(tmp_path):
    from learn2pd.tasks.loaders import load_problems

    f = tmp_path / "t.jsonl"
    f.write_text('{"question": "rev ab", "answer": "ba"}\n\n{"question": "rev abc", "answer": "cba"}\n')
    assert [p.target for p in load_problems(str(f), 5)] == ["ba", "cba"]
    f.write_text('{"q": 1}\n')
    with pytest.raises(ValueError, match="lacks"):
        load_problems(str(f), 5)
