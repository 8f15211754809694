"""Few-shot prompts: K solved training problems of the same family before the question."""

import pytest

from learn2pd.tasks.fewshot import with_fewshot
from learn2pd.tasks.suite import Problem, heldout_problems, is_correct


def test_shots_are_solved_training_problems_of_the_same_family():
    held = heldout_problems(n=9)
    shot = with_fewshot(held, 3, seed=5)
    held_prompts = {p.prompt for p in heldout_problems(n=500)}
    for p, q in zip(held, shot):
        lines = q.prompt.split("\n")
        assert q.prompt.endswith(p.prompt) and q.answer == p.answer and q.family == p.family
        assert q.prompt.count(f"{p.family} ") == 4  # three shots and the question, all of its family
        questions = [line for line in lines if line.startswith(p.family + " ")][:-1]
        assert len(questions) == 3 and not set(questions) & held_prompts
    assert with_fewshot(held, 3, seed=5) == shot and with_fewshot(held, 3, seed=6) != shot
    assert with_fewshot(held, 0) == held


def test_shot_answers_are_correct_and_other_sources_untouched():
    shot = with_fewshot(heldout_problems(("sort",), n=2), 2, seed=0)[0]
    body = shot.prompt.split("\n")
    for q, a in zip(body[0:4:2], body[1:4:2]):
        assert is_correct(Problem("sort", q, " ".join(sorted(q.split()[1:]))), a)
    custom = Problem("numeric", "what is 2+2?", "4")
    assert with_fewshot([custom], 4) == [custom]
    with pytest.raises(ValueError, match="num-fewshot"):
        with_fewshot([custom], -1)
