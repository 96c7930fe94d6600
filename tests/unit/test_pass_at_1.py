"""Executed pass@1: prompt formats, the programs that check completions, and pass@1 counted from per-problem rows."""
import pytest

from spot_utils.data import eval_sets as evalsets
from spot_utils.data.models import byte_tokenizer
from spot_utils.measure import evaluation
from spot_utils.measure.evaluation import coding_program, coding_prompts, pass_at_1, pass_rates

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def humaneval():
    return evalsets.humaneval()[:6]


def whole_script(problem) -> str:
    """What a chat answer holds: the whole function (prompt + canonical body)."""
    return problem["prompt"] + problem["canonical_solution"]


def test_canonical_solutions_pass_and_wrong_ones_fail_in_both_formats(monkeypatch, humaneval):
    """pass_at_1 on generated completions (generation replaced by known answers): the rows hold one outcome per
    problem, and pass@1 is counted from them."""
    answers = {"raw": [p["canonical_solution"] for p in humaneval],
               "chat": [whole_script(p) for p in humaneval]}
    for fmt, good in answers.items():
        completions = good[:4] + ["    return None\n", "def nothing(:\n"]
        monkeypatch.setattr(evaluation, "generate_greedy", lambda *a, c=completions, **k: list(c))
        tok = byte_tokenizer()
        tok.chat_template = CHAT_TEMPLATE
        rows = pass_at_1(None, tok, humaneval, [], prompt_format=fmt, timeout=20)
        assert rows["pass@1"].tolist() == [1.0] * 4 + [0.0, 0.0], fmt
        assert rows["status"].tolist()[:4] == ["passed"] * 4 and rows["completion"].tolist() == completions
        assert rows["task_id"].tolist() == [p["task_id"] for p in humaneval]
        assert pass_rates(rows) == {"humaneval": {"passed": 4, "n": 6, "pass@1": 4 / 6}}


def test_pass_rates_counts_rows_per_subset_and_refuses_duplicates():
    import pandas as pd
    rows = pd.DataFrame(dict(subset=["humaneval"] * 3 + ["mbpp"] * 2, item=[0, 1, 2, 0, 1],
                             **{"pass@1": [1.0, 0.0, 1.0, 0.0, 0.0]}))
    assert pass_rates(rows) == {"humaneval": dict(passed=2, n=3, **{"pass@1": 2 / 3}),
                                "mbpp": dict(passed=0, n=2, **{"pass@1": 0.0})}
    with pytest.raises(ValueError, match="'mbpp' has more than one row"):
        pass_rates(pd.concat([rows, rows.tail(1)]))


def test_mbpp_reference_code_passes_as_a_chat_script():
    problems = evalsets.mbpp()[:3]
    from spot_utils.measure.execution import run_many
    results = run_many([coding_program("mbpp", p, p["code"], "chat") for p in problems], timeout=20)
    assert all(r.passed for r in results)


def test_prompt_formats(humaneval):
    tok = byte_tokenizer()
    raw, stop = coding_prompts("humaneval", humaneval[:2], "raw")
    assert raw == [p["prompt"] for p in humaneval[:2]] and stop == evaluation.HUMANEVAL_STOP
    with pytest.raises(ValueError, match="chat template"):
        coding_prompts("humaneval", humaneval[:1], "chat", tok)
    tok.chat_template = CHAT_TEMPLATE
    chat, stop = coding_prompts("mbpp", evalsets.mbpp()[:1], "chat", tok)
    assert chat[0].startswith("<|im_start|>user\nPlease provide") and chat[0].endswith("```python\n")
    assert evalsets.mbpp()[0]["test_list"][0] in chat[0] and stop == evaluation.CHAT_STOP
    with pytest.raises(ValueError, match="unknown prompt format 'fewshot'"):
        coding_prompts("mbpp", [], "fewshot")
