"""GPQA-Diamond on synthetic questions (never real GPQA text): loaders (file and encrypted zip),
the per-question option shuffle, the prompt, and the letter grader on a table of realistic
completions with the known traps."""

from __future__ import annotations

import random

import pytest
from harness.tasks import get_task
from harness.tasks.gpqa_diamond import extract_letter, permutation

from harness.errors import DataError

SYNTHETIC = "tasks/offline/mcq_synthetic.jsonl"
SYNTHETIC_ZIP = {"zip_path": "tests/data/gpqa_synthetic.zip", "zip_password": "synthetic-password"}
QWQ = {"start": "<think>", "end": "</think>", "opened": True}
NEMOTRON = {"start": "<think>", "end": "</think>", "opened": False}
PERMUTATION = [2, 0, 1, 3]  # shows incorrect 2, correct, incorrect 1, incorrect 3: the correct letter is B

# (name, completion, thinking delimiters, the letter the grader must find)
CASES = [
    ("answer label", "The period follows from T = 2π√(L/g).\n\nAnswer: C", None, "C"),
    ("answer is (X)", "Computing the energy gives 4.0 eV. Therefore, the answer is (C).", None, "C"),
    ("boxed", "Hence the configuration is retained.\n\n$\\boxed{C}$", None, "C"),
    ("boxed text", "Answer: \\boxed{\\text{D}}", None, "D"),
    ("bold letter only", "Weighing both effects, the final choice is\n\n**C**", None, "C"),
    ("bold letter with option text", "The best match:\n\n**B) 2 s**", None, "B"),
    ("bold answer line", "**Answer: A**", None, "A"),
    ("lower case in bold parentheses", "The correct answer is **(c)**", None, "C"),
    ("lower case in parentheses", "Putting it together, the answer is (c).", None, "C"),
    ("lower case ending the line", "ANSWER: b", None, "B"),
    ("article a, then the answer", "The answer is a consequence of ring strain.\n\nAnswer: B", None, "B"),
    ("article a, no answer", "The answer is a bit subtle, since ring strain and sterics compete here.", None, None),
    ("article a after answer label", "answer: a mixture of both isomers forms", None, None),
    ("article a in bold", "The answer is **a mixture of both isomers**, as the ratio shows.", None, None),
    ("capital article A", "A good approach is to compare the pKa values. A lower pKa means a stronger acid.", None, None),
    ("letters inside words", "Dimethyl ether and Acetone are both polar. Both compounds Dissolve.", None, None),
    ("chemistry letters", "Vitamin C is an antioxidant; the structure has a C=O bond.", None, None),
    ("option recap before the answer", "Recap: (A) 1 s is too short, (B) 2 s matches, (C) 4 s is too long, (D) ignores g. Answer: B", None, "B"),
    ("option recap after the answer", "The answer is (B).\n\nWhy not the others: (A) is too short, (C) too long, (D) ignores g.", None, "B"),
    ("the last statement wins", "At first I thought the answer is (A). Wait, recomputing the flux... the answer is (D).", None, "D"),
    ("answer only in unclosed thinking", "Let me think. Maybe the answer is (B) since", QWQ, None),
    ("template-opened thinking, then boxed", "Options (A) and (C) fail.\n</think>\n\n**Final Answer**\n\\boxed{B}", QWQ, "B"),
    ("model-opened thinking", "<think>\nthe answer is (A)? no...\n</think>\n\nThe answer is (C)", NEMOTRON, "C"),
    ("answer with option text", "The answer is: **D) 12 MeV**", None, "D"),
    ("final answer with text", "Final answer: (B) 2 s", None, "B"),
    ("answer should be", "The answer should be C.", None, "C"),
    ("bare capital after answer is", "I think the answer is B because the molar mass fits.", None, "B"),
    ("correct option is (x)", "The correct option is (d)", None, "D"),
    ("lone letter line (fallback)", "After all that, my choice:\n\nB", None, "B"),
    ("option X (fallback)", "So option C must be correct.", None, "C"),
    ("parenthesised letter (fallback)", "This matches (B) best.", None, "B"),
    ("empty", "", None, None),
]


@pytest.mark.parametrize(("name", "completion", "thinking", "letter"), CASES, ids=[c[0] for c in CASES])
def test_grader(name, completion, thinking, letter):
    meta = {"permutation": PERMUTATION, "correct_letter": "B", "thinking": thinking}
    grade = get_task("gpqa_diamond").grade({"id": "synth"}, completion, meta, {})
    verdict = "no_answer" if letter is None else ("correct" if letter == "B" else "wrong")
    assert (grade.extracted, grade.verdict, grade.correct) == (letter, verdict, verdict == "correct")
    assert grade.details["correct_letter"] == "B"


def test_gold_comes_from_the_stored_permutation():
    task = get_task("gpqa_diamond")
    assert task.grade({}, "Answer: D", {"permutation": [1, 2, 3, 0]}, {}).correct
    assert not task.grade({}, "Answer: D", {"permutation": [0, 1, 2, 3]}, {}).correct
    assert task.grade({}, "Answer: A", {"correct_letter": "A"}, {}).correct  # hand-written files
    with pytest.raises(ValueError):
        task.grade({}, "Answer: A", {}, {})


def test_load_synthetic_file():
    problems, source = get_task("gpqa_diamond").load({"data": {"path": SYNTHETIC}})
    assert [p["id"] for p in problems] == ["synth001", "synth002", "synth003", "synth004"]
    assert problems[0]["correct"] == "2 s" and problems[0]["incorrect"] == ["1 s", "4 s", "1.41 s"]  # stripped
    assert source["kind"] == "file"


def test_load_encrypted_zip_in_memory():
    problems, source = get_task("gpqa_diamond").load({"data": SYNTHETIC_ZIP})
    from_file, _ = get_task("gpqa_diamond").load({"data": {"path": SYNTHETIC}})
    assert problems == from_file
    assert source["member"] == "dataset/gpqa_diamond.csv" and len(source["sha256"]) == 64


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({**SYNTHETIC_ZIP, "zip_password": "wrong"}, "cannot decrypt"),
        ({**SYNTHETIC_ZIP, "zip_password": None}, "cannot decrypt"),
        ({**SYNTHETIC_ZIP, "zip_member": "dataset/gpqa_main.csv"}, "no member"),
        ({**SYNTHETIC_ZIP, "zip_path": "tests/data/missing.zip"}, "not found"),
    ],
)
def test_zip_errors(data, message):
    with pytest.raises(DataError, match=message):
        get_task("gpqa_diamond").load({"data": data})


def test_permutation_is_a_pure_function_of_id_and_seed():
    random.seed(1)
    state = random.getstate()
    first = permutation("rec123", 0)
    assert random.getstate() == state  # no global RNG
    random.seed(999)
    assert permutation("rec123", 0) == first and sorted(first) == [0, 1, 2, 3]
    orders = {tuple(permutation(f"rec{i}", seed)) for i in range(200) for seed in (0, 1)}
    assert len(orders) == 24  # every order occurs
    positions = [permutation(f"rec{i}", 0).index(0) for i in range(2000)]
    assert all(400 < positions.count(k) < 600 for k in range(4))  # the correct option is uniform over letters
    assert any(permutation(f"rec{i}", 0) != permutation(f"rec{i}", 1) for i in range(10))  # the seed matters


def test_prompt_shows_shuffled_options_and_stores_the_permutation():
    task = get_task("gpqa_diamond")
    problems, _ = task.load({"data": {"path": SYNTHETIC}})
    problem = problems[0]
    [message], meta = task.prompt(problem, 7, {"prompt_variant": "cot"})
    order = meta["permutation"]
    assert order == permutation("synth001", 7) and meta["correct_letter"] == "ABCD"[order.index(0)]
    options = [problem["correct"], *problem["incorrect"]]
    choices = "\n".join(f"({letter}) {options[i]}" for letter, i in zip("ABCD", order))
    assert message == {
        "role": "user",
        "content": f"What is the correct answer to this question: {problem['question']}\nChoices:\n{choices}\n"
        "Let's think step by step:",
    }
    [lm_eval], _ = task.prompt(problem, 7, {"prompt_variant": "lm_eval_cot"})
    assert lm_eval["content"].startswith("What is the correct answer to this question:(Synthetic)")
    assert lm_eval["content"].endswith("Let's think step by step: ")
    with pytest.raises(ValueError, match="prompt_variant"):
        task.prompt(problem, 7, {"prompt_variant": "nope"})


def test_ids_hold_no_question_text():
    problems, _ = get_task("gpqa_diamond").load({"data": {"path": SYNTHETIC}})
    assert all(p["id"].startswith("synth") and p["id"] not in p["question"] for p in problems)


def test_extraction_reports_how():
    assert extract_letter("Answer: C") == ("C", "explicit")
    assert extract_letter("so **C**") == ("C", "bold")
    assert extract_letter("matches (C)") == ("C", "fallback")
    assert extract_letter("nothing") == (None, "none")
