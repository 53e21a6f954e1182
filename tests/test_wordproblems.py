import operator
import re
from collections import Counter

import pytest

from core.data import wordproblems
from core.data.wordproblems import NAME_SET, NUMBER_WORDS, OBJECTS, generate

OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
STEP = re.compile(r"(\d+)([-+*/])(\d+)=(\d+)")
DIGITS = re.compile(r"\d{1,3}(?:,\d{3})+|\d+")


@pytest.fixture(scope="module")
def train():
    return generate(5000, "train", seed=0)


def steps(problem):
    """(a, op, b, result) for every step line, failing on any line that is not ``a<op>b=c``."""
    *lines, _ = problem.solution.split("\n")
    out = []
    for line in lines:
        match = STEP.fullmatch(line)
        assert match, f"not a step: {line!r} in {problem.question!r}"
        a, op, b, c = match.groups()
        out.append((int(a), op, int(b), int(c)))
    return out


def digit_numbers(question):
    return [int(x.replace(",", "")) for x in DIGITS.findall(question)]


def numbers_in(question):
    """Every number a question states, as digits or as a supported word ("%" reads as "percent")."""
    words = re.findall(r"[a-z]+", question.lower().replace("%", " percent "))
    return set(digit_numbers(question)) | {NUMBER_WORDS[w] for w in words if w in NUMBER_WORDS}


def asking_sentence(question):
    """The sentence that asks: the first that ends in "?", else the last."""
    sentences = re.split(r"(?<=[.?])\s+", question)
    return next((s for s in sentences if s.endswith("?")), sentences[-1])


def test_generation_is_seeded_and_another_seed_gives_other_problems(train):
    assert train[:50] == generate(50, "train", seed=0)
    assert generate(50, "train", seed=1) != train[:50]
    assert generate(50, "heldout", seed=0) == generate(50, "heldout", seed=0)


def test_train_and_heldout_share_no_instance_and_no_question(train):
    heldout = generate(1000, "heldout", seed=0)
    assert len({p.instance_key for p in train}) == 5000 and len({p.instance_key for p in heldout}) == 1000
    assert not {p.instance_key for p in train} & {p.instance_key for p in heldout}
    assert not {p.question for p in train} & {p.question for p in heldout}
    assert all(int(p.instance_key[:8], 16) % 10 == 0 for p in heldout)


def test_a_wrong_split_raises_value_error():
    with pytest.raises(ValueError):
        generate(1, "test", seed=0)


def test_every_step_is_whole_arithmetic_and_the_last_line_is_the_answer(train):
    for p in train:
        worked = steps(p)
        for a, op, b, c in worked:
            assert OPS[op](a, b) == c and 0 <= c <= 9999, (p.question, p.solution)
        assert worked[-1][3] == p.answer
        assert p.solution.split("\n")[-1] == f"#### {p.answer}"


def test_every_number_a_step_uses_is_in_the_question_or_an_earlier_result(train):
    for p in train:
        known = numbers_in(p.question)
        for a, _, b, c in steps(p):
            assert a in known and b in known, (p.question, p.solution)
            known.add(c)


def test_problems_take_one_to_four_steps_with_all_four_operations(train):
    counts = Counter(p.steps for p in train)
    assert set(counts) == {1, 2, 3, 4} and min(counts.values()) >= 250
    ops = Counter(op for p in train for _, op, _, _ in steps(p))
    assert set(ops) == set("+-*/") and min(ops.values()) >= 500


def test_at_least_forty_families_occur_in_five_thousand_problems(train):
    families = Counter(p.template for p in train)
    assert len(wordproblems.FAMILIES) >= 40 and len(families) >= 40
    assert max(families.values()) <= 0.05 * len(train)


def test_names_objects_and_question_openings_vary_widely(train):
    questions = [p.question for p in train]
    words = Counter(w for q in questions for w in re.findall(r"[A-Z][a-z]+", q))
    objects = {t.many for kind in OBJECTS.values() for t in kind if any(f" {t.many}" in q for q in questions)}
    names = re.compile(rf"\b({'|'.join(NAME_SET)})\b")
    openings = Counter(" ".join(names.sub("NAME", asking_sentence(q)).lower().split()[:2]) for q in questions)
    assert len(set(questions)) >= 4500
    assert len(NAME_SET & set(words)) >= 80
    assert len(objects) >= 80
    assert len(openings) >= 30 and openings.most_common(1)[0][1] <= 0.4 * len(train)


def test_no_single_frame_dominates_once_names_objects_and_numbers_are_masked(train):
    objects = [t for kind in OBJECTS.values() for t in kind]
    vocabulary = {t.one for t in objects} | {t.many for t in objects} | NAME_SET | set(NUMBER_WORDS) | {"a dozen"}
    alternatives = "|".join(map(re.escape, sorted(vocabulary, key=len, reverse=True)))
    mask = re.compile(rf"\b({alternatives})\b|[$€£]?{DIGITS.pattern}")
    problems = Counter(mask.sub("#", p.question) for p in train)
    sentences = Counter(s for skeleton in problems.elements() for s in re.split(r"(?<=[.?])\s+", skeleton))
    assert len(problems) >= 4000
    assert sentences.most_common(1)[0][1] <= 0.02 * sum(sentences.values()), sentences.most_common(3)


def test_question_first_if_folds_and_pronouns_all_occur(train):
    questions = [p.question for p in train]
    first = sum(re.split(r"(?<=[.?])\s+", q)[0].endswith("?") and not q.endswith("?") for q in questions)
    folded = sum(asking_sentence(q).startswith("If ") for q in questions)
    assert first >= 0.03 * len(train) and folded >= 0.05 * len(train)
    for pronoun in ("he", "she", "they"):
        assert any(re.search(rf"\b{pronoun}\b", q, re.IGNORECASE) for q in questions)


def test_small_numbers_are_sometimes_written_as_words(train):
    words = set(NUMBER_WORDS) - {"percent"}
    with_words = sum(any(w in words for w in re.findall(r"[a-z]+", p.question.lower())) for p in train)
    assert 0.15 * len(train) <= with_words <= 0.85 * len(train)
    assert any("a dozen" in p.question for p in train) and any("twice" in p.question for p in train)
    assert any("half" in p.question for p in train)


def test_some_problems_carry_a_distractor_number_that_no_step_uses(train):
    def has_distractor(p):
        used = {n for a, _, b, _ in steps(p) for n in (a, b)}
        return any(n not in used for n in digit_numbers(p.question))

    share = sum(map(has_distractor, train)) / len(train)
    assert 0.05 <= share <= 0.30


def test_question_numbers_stay_in_range_and_mostly_below_a_thousand(train):
    numbers = [n for p in train for n in digit_numbers(p.question)]
    assert all(0 <= n <= 9999 for n in numbers)
    assert sum(n < 1000 for n in numbers) >= 0.9 * len(numbers)
