"""Stage 07 as a whole on a tiny model: the plan's arms, LoRA matched to the sparse arms' counts, the spot's
unselected entries untouched, and a stage killed inside an arm's training and rerun giving the same rows."""
import pytest

from conftest import killed_at_batch, random_sequences, write_stage03_masks
from spot_utils import scoped_parameters
from spot_utils.analysis.metric_names import TRAINABLE_COUNT, TUNING_CODE_GAIN, TUNING_GENERAL_FORGETTING
from spot_utils.analysis.rows import to_frame
from spot_utils.experiment import tuning_stage
from spot_utils.experiment.params import validate
from spot_utils.base.run_files import mask_path
from spot_utils.method.masks import MaskFile, mask_count
from spot_utils.method.tuning import lora_count

LANGUAGES, UNSEEN, REFS = ["go", "rust", "java"], ["python"], ["english", "english_modern"]


@pytest.fixture
def run(llama, tmp_path, monkeypatch):
    import spot_utils.base.run_files as runs
    monkeypatch.setattr(runs, "RUNS_DIR", tmp_path / "runs")
    model, tok = llama
    params = validate(dict(run_name="t", model="random:llama", languages=LANGUAGES, unseen_languages=UNSEEN,
                           general_eval=REFS, k_grid=[1.0, 2.0], k_detail=1.0, authors_spot_k=[2.0], tuning=True,
                           tuning_k=[1.0, 2.0], tuning_steps=3, tuning_seeds=[0, 1], bootstrap_samples=100,
                           tuning_arms=["spot", "authors_spot", "random_uniform", "code_over_general", "lora",
                                        "full"]))
    write_stage03_masks(params, {n: p.detach().abs() for n, p in scoped_parameters(model).items()}, model)
    subsets = {s: random_sequences(3, seed=i) for i, s in enumerate(LANGUAGES + UNSEEN + REFS)}
    training = {lang: random_sequences(4, seed=10 + i) for i, lang in enumerate(LANGUAGES[:-1])}
    return model, tok, params, subsets, training


def test_the_plan_trains_every_arm_with_loras_matched_to_the_sparse_counts(run):
    model, _, params, _, _ = run
    entries = tuning_stage.plan(params, model)
    ids = [tuning_stage.entry_id(labels) for labels, _ in entries]
    assert len(ids) == len(set(ids))
    authors = MaskFile(mask_path(params, "authors_spot", 2.0, "paper"))
    assert ("paper/authors_spot/k2_s0" in ids) == (mask_count(authors) > 0)  # where its file has entries only
    assert not any("authors_spot/k1" in i or i.startswith("global/authors_spot") for i in ids)
    assert "shared/code_over_general/k1_s1" in ids and "global/spot/k2_s1" in ids
    assert {i for i in ids if i.startswith("full")} == {"full/s0", "full/s1"}
    for labels, rank in entries:
        if labels["arm"] == "lora":
            counts = [lab["n_entries"] for lab, _ in entries if lab["arm"] == "sparse"
                      and lab["k_percent"] == labels["k_percent"] and lab["seed"] == labels["seed"]]
            nearest = min(counts, key=lambda c: abs(lora_count(model, rank) - c))
            assert abs(lora_count(model, rank) - nearest) <= lora_count(model, 1)
    assert tuning_stage.held_out_language(params) == "java"


def test_stage_07_killed_inside_an_arm_and_rerun_gives_the_same_rows(run, tmp_path):
    model, tok, params, subsets, training = run
    params = dict(params, tuning_seeds=[0], tuning_k=[1.0])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    store = tuning_stage.TuningStore(params)
    untrained, results = tuning_stage.run(model, tok, params, subsets, store, training)
    whole = tuning_stage.rows_of(untrained, results, params, vocab=256)
    assert all(p.equal(before[n]) for n, p in model.named_parameters())  # each arm trained a copy
    df = to_frame(whole)
    arms = df[df.metric == TUNING_CODE_GAIN]
    assert set(arms.arm) == {"sparse", "lora", "full"}
    assert set(arms.subset) == {"code", "code:trained", "code:held_out", "code:unseen"}
    assert set(df[df.metric == TUNING_GENERAL_FORGETTING].reference) == set(REFS)
    full = df[(df.metric == TRAINABLE_COUNT) & (df.arm == "full")].value.iloc[0]
    assert full == sum(p.numel() for p in model.parameters())
    sparse = df[(df.metric == TRAINABLE_COUNT) & (df.arm == "sparse")]
    masks = {(lab["mask_kind"], lab["configuration"]): lab["n_entries"] for lab, _ in results.values()
             if lab["arm"] == "sparse"}
    assert sorted(sparse.value) == sorted(masks.values())  # a sparse arm trains exactly its mask's entries
    assert (arms.ci_low <= arms.value).all() and (arms.value <= arms.ci_high).all()

    other = dict(params, run_name="t2")
    import shutil
    import spot_utils.base.run_files as runs
    shutil.copytree(runs.run_dir(params) / "masks", runs.run_dir(other) / "masks")
    first = tuning_stage.TuningStore(other)
    n_calls = 1 + len(subsets) * 3 // params["batch_size"] + 1 + 2 * (params["tuning_steps"] + 2)
    with killed_at_batch(model, n_calls):
        tuning_stage.run(model, tok, other, subsets, first, training)
    assert 1 <= len(first.written) < len(results)  # killed inside a later arm's training
    second = tuning_stage.TuningStore(other)
    untrained_again, again = tuning_stage.run(model, tok, other, subsets, second, training)
    assert second.reused == first.written and len(second.written) == len(results) - len(first.written)
    assert tuning_stage.rows_of(untrained_again, again, other, vocab=256) == whole
