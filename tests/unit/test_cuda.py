"""The CUDA path against the CPU one and the naive references: scores in fp32 and bf16, ablation and its restore,
top-k selection. Skipped without a CUDA device; `benchmarks/gpu_checks.sh` runs them there and records the result."""
import pytest
import torch

from conftest import random_sequences
from spot_utils import ablated, load_model, score, scoped_parameters, select_top_k
from spot_utils.method.ablation import MODES
from spot_utils.method.selection import _SMALL, GRANULARITIES
from test_scoring_criteria import naive

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

ARCHITECTURES = ["llama", "qwen2", "gemma3"]


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("criterion", ["grad_x_weight", "abs_grad_x_weight", "fisher"])
def test_fp32_scores_on_cuda_equal_naive_and_cpu(arch, criterion):
    seqs = random_sequences(5)
    on_cpu = score(load_model(f"random:{arch}")[0], seqs, criterion=criterion, batch_size=3)
    model, _ = load_model(f"random:{arch}", device="cuda")
    got = score(model, seqs, criterion=criterion, batch_size=3)
    ref = naive(model, [s.cuda() for s in seqs], criterion)  # batch 1 on the same GPU
    assert set(got) == set(ref) == set(on_cpu)
    for n in ref:
        assert got[n].dtype == torch.float32 and got[n].device.type == "cpu"
        torch.testing.assert_close(got[n], ref[n].cpu(), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(got[n], on_cpu[n], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_bf16_scores_on_cuda_are_float32_and_close_to_fp32_and_naive(arch):
    seqs = random_sequences(6)
    fp32 = score(load_model(f"random:{arch}")[0], seqs, batch_size=3)
    model, _ = load_model(f"random:{arch}", dtype="bfloat16", device="cuda")
    got = score(model, seqs, batch_size=3)
    ref = naive(model, [s.cuda() for s in seqs], "grad_x_weight")  # the same bf16 model, batch 1, fp32 sums
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    for n in fp32:
        assert got[n].dtype == torch.float32 and got[n].device.type == "cpu"
        assert relative(got[n], fp32[n]) < 0.05, n
        assert relative(got[n], ref[n].cpu()) < 0.05, n


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("mode", MODES)
def test_ablation_on_cuda_writes_what_cpu_writes_and_restores_bit_exactly(arch, mode):
    cpu_model, _ = load_model(f"random:{arch}")
    model, _ = load_model(f"random:{arch}", device="cuda")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = select_top_k({n: p.detach().abs() for n, p in scoped_parameters(cpu_model).items()}, 5.0)
    with ablated(model, masks, mode=mode, seed=3), ablated(cpu_model, masks, mode=mode, seed=3):
        assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())
        for n, p in cpu_model.named_parameters():  # the mean and noise differ only by float reduction order
            torch.testing.assert_close(dict(model.named_parameters())[n].detach().cpu(), p.detach(),
                                       rtol=0 if mode == "zero" else 1e-5, atol=0 if mode == "zero" else 1e-6)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def _tied_scores(seed: int, size: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    scores = {f"layers.{i}.w": torch.randint(0, 4, (size, 7), generator=gen).float() for i in range(3)}
    scores["layers.0.norm"] = torch.rand(9, generator=gen)
    scores["a.bias"] = torch.zeros(5)
    return scores


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("size", [6, _SMALL // 7 + 1])  # one copy of the keys; bracket, then radix select
def test_top_k_of_cuda_scores_equals_top_k_on_cpu(granularity, size):
    scores = _tied_scores(size, size)
    if size > 6:  # all-equal values: the sampled bracket holds too many keys and the radix select decides
        scores["layers.3.w"] = torch.zeros(_SMALL + 1)
    on_gpu = {n: s.cuda() for n, s in scores.items()}
    for k in (0.5, 3, 37.5, 99.9):
        try:
            ref = select_top_k(scores, k, granularity)
        except ValueError:  # k selects no entry of these few: the GPU path must refuse it the same way
            with pytest.raises(ValueError, match="selects no entry"):
                select_top_k(on_gpu, k, granularity)
            continue
        got = select_top_k(on_gpu, k, granularity)
        for n in scores:
            assert torch.equal(got[n].cpu(), ref[n]), (k, n)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_batched_generation_on_cuda_equals_single_prompts(arch):
    """Left-padded batches on the GPU give each prompt's tokens as one-prompt calls do (tests/unit/test_evaluation.py
    checks the same on CPU against a plain argmax loop)."""
    from test_evaluation import PROMPTS, generated_tokens
    model, tok = load_model(f"random:{arch}", device="cuda")
    batched = generated_tokens(model, tok, PROMPTS, 20, batch_size=len(PROMPTS))
    assert batched == generated_tokens(model, tok, PROMPTS, 20, batch_size=1)


def test_lm_eval_multiple_choice_runs_on_the_cuda_model_as_on_cpu(tmp_path):
    pytest.importorskip("lm_eval")  # a GPU image without the project's environment lacks it
    import numpy as np
    from spot_utils.measure.multiple_choice import MultipleChoice
    from test_lmeval import ITEMS
    scores = {}
    for device in ("cpu", "cuda"):
        model, tok = load_model("random:llama", device=device)
        mc = MultipleChoice(model, tok, {"hand": ITEMS}, tmp_path / device, batch_size=2)
        assert mc.lm.model is model and mc.lm.device.type == device
        scores[device] = mc.item_scores()
    assert np.allclose(np.concatenate(scores["cuda"].logliks.to_list()),
                       np.concatenate(scores["cpu"].logliks.to_list()), atol=1e-3)


def test_stage_03_selection_from_files_on_cuda_equals_the_cpu_one(tmp_path):
    """Stage 03's masks with every tensor read onto the GPU (selection.on_device): bit for bit the CPU's."""
    from spot_utils.base import run_files as runs
    from spot_utils.method.masks import save_masks
    from spot_utils.method.selection import View, iter_regions, language_masks, on_device, stage_masks
    from spot_utils.method.masks import MaskFile
    scores = _tied_scores(_SMALL // 5 + 1, _SMALL // 7 + 1)
    gen = torch.Generator().manual_seed(1)
    files = {}
    for name in ("A", "G", "go", "rust"):
        files[name] = tmp_path / f"{name}.safetensors"
        runs.save_tensors(files[name], {n: s * torch.rand(s.shape, generator=gen) for n, s in scores.items()}, {})
    weights = {n: torch.rand(s.shape, generator=gen) for n, s in scores.items()}
    results = {}
    for device in ("cpu", "cuda"):
        A, G = (on_device(runs.TensorFile(files[x]), device) for x in ("A", "G"))
        W = on_device(weights, device)
        got = {kind: dict(m.items()) for kind, m in stage_masks(A, G, W, 1.0)}
        lang = {l: on_device(View(runs.TensorFile(files[l]), fn=lambda n, t: t.abs()), device) for l in ("go", "rust")}
        for l, k, m in language_masks(lang, [1.0, 20.0]):
            save_masks(tmp_path / device / f"{l}{k}.safetensors", m, {})
            got[f"lang_{l}_{k}"] = dict(m.items())
        regions = iter_regions({l: MaskFile(tmp_path / device / f"{l}20.0.safetensors") for l in ("go", "rust")})
        got.update((kind, dict(m.items())) for kind, m in regions)
        results[device] = got
    assert results["cpu"].keys() == results["cuda"].keys()
    for kind, masks in results["cpu"].items():
        assert all(torch.equal(results["cuda"][kind][n], m) for n, m in masks.items()), kind
