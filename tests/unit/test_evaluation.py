"""Batched generation as run on a GPU: left-padded greedy batches give the tokens of one prompt at a time."""
import torch

from spot_utils.measure.evaluation import generate_greedy

NEVER = ("\x00\x00\x00never",)  # a stop sequence no completion below contains
PROMPTS = ["d", "def add(a, b):\n", "x = 1\n" * 6 + "# and now a much longer prompt than the others\n", "import os\n"]


def argmax_loop(model, tok, prompt: str, n: int) -> list[int]:
    """Greedy token ids without KV cache, padding or batching: the reference."""
    ids = tok(prompt, return_tensors="pt").input_ids
    start = ids.shape[1]
    with torch.no_grad():
        for _ in range(n):
            nxt = model(input_ids=ids, use_cache=False).logits[0, -1].argmax()
            ids = torch.cat([ids, nxt.view(1, 1)], 1)
            if int(nxt) == tok.eos_token_id:
                break
    return ids[0, start:].tolist()


def generated_tokens(model, tok, prompts, n, batch_size) -> list[list[int]]:
    """The new token ids of each prompt as generate_greedy's batches produced them (up to the first EOS)."""
    rows, generate = [], model.generate

    def spy(**kw):
        out = generate(**kw)
        for row in out[:, kw["input_ids"].shape[1]:].tolist():
            rows.append(row[: row.index(tok.eos_token_id) + 1] if tok.eos_token_id in row else row)
        return out
    model.generate = spy
    try:
        texts = generate_greedy(model, tok, prompts, NEVER, max_new_tokens=n, batch_size=batch_size)
    finally:
        del model.generate
    assert texts == [tok.decode(r, skip_special_tokens=True) for r in rows]
    return rows


def test_left_padded_batches_generate_the_tokens_of_single_prompts(tiny):
    """Llama, Qwen2 and Gemma3 (sliding window 16, passed by the 20 new tokens): one batch pads prompts of 1
    to 83 tokens on the left; each completion's tokens equal a plain argmax loop over that prompt alone."""
    model, tok = tiny
    assert len({len(tok(p).input_ids) for p in PROMPTS}) == len(PROMPTS)  # every row is padded differently
    n = 20
    batched = generated_tokens(model, tok, PROMPTS, n, batch_size=len(PROMPTS))
    assert batched == generated_tokens(model, tok, PROMPTS, n, batch_size=1)
    assert batched == [argmax_loop(model, tok, p, n) for p in PROMPTS]
