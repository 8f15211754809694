import itertools

import pytest

from learn2pd.tasks.suite import FAMILIES, Problem, heldout_problems, is_correct, train_problems


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
    assert [p.family for p in a[:3]] == list(FAMILIES)
    held = {p.prompt for p in heldout_problems(n=6000)}
    train = list(itertools.islice(train_problems(), 6000))
    assert not held & {p.prompt for p in train}
    assert len({len(p.answer) for p in train}) > 10  # variable answer lengths


def test_checker_uses_final_answer_for_arith():
    p = Problem("arith", "arith 1+2", "1+2=3\n#3")
    assert is_correct(p, "1+2=4\n#3")  # worked steps are not graded, the final answer is
    assert not is_correct(p, "1+2=3\n#4")
    assert not is_correct(p, "")
    assert is_correct(Problem("rev", "rev ab", "ba"), " ba ")


def test_unknown_family_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown task family"):
        heldout_problems(("algebra",), 3)
