"""Probing throughput: mlul's probe against a naive baseline in the same process.

Baseline (the naive Hugging Face path): one `generate` call per question (16 new tokens) and
full-vocabulary logits over every position of one sequence per answer when scoring. For reference,
also the previous mlul probe: batched `generate` and answer-only logits, one sequence per answer.
mlul: each question prompt runs once; the true and fake answers are scored from its keys and values
and greedy generation continues from them, each answer leaving the batch at its newline, with a
limit of the longest answer form plus a margin.

    python -m benchmarks.bench_probe [--items 6] [--langs all]
"""

from __future__ import annotations

import argparse
import inspect
import time

import torch

from benchmarks.common import describe_machine, flops_per_token, matmul_flops_per_second
from mlul.data import load_news, says
from mlul.languages import answer_text, qa_prompt
from mlul.lm import encode_group, encode_pair, group_batch, score_groups
from mlul.models import load_model
from mlul.probe import _stop_ids, answer_budget, generate_hf, probe, score

NAIVE_NEW_TOKENS = 16


@torch.inference_mode()
def naive_probe(model, tokenizer, rows):
    out = []
    for r in rows:
        prompt = qa_prompt(r["lang"], r["question"])
        ids = tokenizer(prompt, return_tensors="pt")
        gen = model.generate(**ids, max_new_tokens=NAIVE_NEW_TOKENS, do_sample=False)
        answer = tokenizer.decode(gen[0, ids.input_ids.shape[1] :], skip_special_tokens=True).split("\n")[0]
        logps = []
        for ans in (r["true_answer"], r["fake_answer"]):
            e = encode_pair(tokenizer, prompt, answer_text(r["lang"], ans))
            logits = model(input_ids=torch.tensor([e.input_ids])).logits[0].float()
            logp = torch.log_softmax(logits, -1)
            logps.append(sum(logp[i - 1, t].item() for i, t in enumerate(e.labels) if t != -100))
        out.append((answer.strip(), logps[1] - logps[0]))
    return out


def previous_probe(model, tokenizer, rows):
    """mlul's probe before prefix sharing: one full sequence per answer, HF `generate` (16 tokens)."""
    prompts = [qa_prompt(r["lang"], r["question"]) for r in rows]
    examples = [
        encode_pair(tokenizer, p, answer_text(r["lang"], r[k]))
        for p, r in zip(prompts, rows)
        for k in ("true_answer", "fake_answer")
    ]
    logp = score(model, tokenizer, examples).logp.to_numpy()
    return generate_hf(model, tokenizer, prompts, NAIVE_NEW_TOKENS), logp[1::2] - logp[::2]


def needed_flops(model, tokenizer, rows, limit: int) -> tuple[float, int]:
    """FLOPs of the linear layers a probe cannot avoid (forward only; attention scores left out):
    each prompt once, each answer token's input, one vocabulary projection per distinct predicting
    position, and every generated token but the first (which comes from the prompt's pass).
    Also returns the number of generated tokens."""
    body, head = flops_per_token(model)
    groups = [
        encode_group(
            tokenizer,
            qa_prompt(r["lang"], r["question"]),
            [answer_text(r["lang"], r[k]) for k in ("true_answer", "fake_answer")],
        )
        for r in rows
    ]
    flops = 0.0
    for g in groups:
        flops += len(g.prompt_ids) * body + head  # the prompt, and the projection at its last position
        flops += sum(len(c) - 1 for c in g.completions) * (body + head)
    _, _, _, generated = score_groups(model, group_batch(groups, tokenizer.pad_token_id), limit, _stop_ids(tokenizer))
    steps = sum(len(ids) - 1 for ids in generated)
    return flops + steps * (body + head), steps + len(groups)


DEFAULT_BATCH = inspect.signature(probe).parameters["batch_size"].default


def batch_sizes(text: str) -> list[int]:
    """`--batch-sizes 64,128` as [64, 128]; a clear error for anything but positive integers."""
    try:
        sizes = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 64,128") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive integers, e.g. 64,128; got {text!r}")
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=6)
    parser.add_argument("--langs", default="all")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--batch-sizes",
        type=batch_sizes,
        default=[],
        help="also time mlul's probe at these batch sizes (comma-separated, e.g. 64,128), beside its default",
    )
    args = parser.parse_args()
    describe_machine(args.threads)
    model, tokenizer = load_model()
    rows = load_news(args.langs, split="inject")
    keep = sorted({r["id"] for r in rows})[: args.items]
    rows = [r for r in rows if r["id"] in keep]
    limit = answer_budget(tokenizer, rows)
    probe(model, tokenizer, rows[:4], specificity=False, progress=False)  # warm-up
    peak_before = matmul_flops_per_second()

    start = time.perf_counter()
    naive = naive_probe(model, tokenizer, rows)
    naive_s = time.perf_counter() - start

    start = time.perf_counter()
    previous_answers, previous_margin = previous_probe(model, tokenizer, rows)
    previous_s = time.perf_counter() - start

    start = time.perf_counter()
    table = probe(model, tokenizer, rows, specificity=False, progress=False)
    fast_s = time.perf_counter() - start

    start = time.perf_counter()
    same_limit = probe(model, tokenizer, rows, specificity=False, progress=False, max_new_tokens=NAIVE_NEW_TOKENS)
    same_limit_s = time.perf_counter() - start

    start = time.perf_counter()
    probe(model, tokenizer, rows, generation=False, specificity=False, progress=False)
    score_s = time.perf_counter() - start
    # The default batch again beside the others: its two timings show the run-to-run noise.
    sizes = [DEFAULT_BATCH, *args.batch_sizes] if args.batch_sizes else []
    sweep = {}  # batch size -> (seconds, table, seconds of the study's in-between probe)
    for size in sizes:
        start = time.perf_counter()
        sized = probe(model, tokenizer, rows, specificity=False, progress=False, batch_size=size)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        probe(model, tokenizer, rows, generation=False, progress=False, batch_size=size)  # with controls
        sweep[size] = (seconds, sized, time.perf_counter() - start)
    peak = (peak_before + matmul_flops_per_second()) / 2

    margin_diff = max(abs(m - n[1]) for m, n in zip(table.margin, naive))
    previous_diff = float(abs(table.margin.to_numpy() - previous_margin).max())
    same = sum(a == n[0] for a, n in zip(same_limit.answer, naive)) / len(rows)
    same_previous = sum(a == b for a, b in zip(same_limit.answer, previous_answers)) / len(rows)
    verdicts = sum(
        (says(a, r, "fake"), says(a, r, "true")) != (says(n[0], r, "fake"), says(n[0], r, "true"))
        for a, n, r in zip(table.answer, naive, rows)
    )
    flops, tokens = needed_flops(model, tokenizer, rows, limit)
    for size, (seconds, sized, in_between_s) in sweep.items():
        diff = float(abs(sized.margin.to_numpy() - table.margin.to_numpy()).max())
        same_answers = (sized.answer == table.answer).mean()
        print(
            f"batch {size:3d}: mlul probe {seconds:5.1f} s = {naive_s / seconds:.1f}x over the naive path, "
            f"{flops / seconds / peak:.0%} of the matmul rate; scoring with controls, no generation (the "
            f"study's in-between probe) {in_between_s:5.1f} s; max |margin difference| {diff:.1e}, "
            f"same answers {same_answers:.0%}"
        )
    print(f"pairs (item x language): {len(rows)}; generation limit {limit} tokens (naive: {NAIVE_NEW_TOKENS})")
    print(f"naive HF baseline:   {naive_s:6.1f} s = {len(rows) / naive_s:.2f} pairs/s")
    print(
        f"previous mlul probe: {previous_s:6.1f} s = {len(rows) / previous_s:.2f} pairs/s  ({naive_s / previous_s:.1f}x)"
    )
    print(
        f"mlul probe:          {fast_s:6.1f} s = {len(rows) / fast_s:.2f} pairs/s  (scoring alone {score_s:.1f} s; "
        f"with the naive {NAIVE_NEW_TOKENS}-token limit {same_limit_s:.1f} s = {naive_s / same_limit_s:.1f}x)"
    )
    print(f"speed-up: {naive_s / fast_s:.1f}x over the naive path, {previous_s / fast_s:.1f}x over the previous probe")
    print(
        f"max |margin difference|: {margin_diff:.2e} (naive), {previous_diff:.2e} (previous); identical greedy "
        f"answers at the same limit: {same:.0%} (naive), {same_previous:.0%} (previous); says_fake/says_true "
        f"verdicts changed by the shorter limit: {verdicts} of {len(rows)}"
    )
    print(
        f"matmul rate: {peak / 1e9:.0f} GFLOP/s (mean of before {peak_before / 1e9:.0f} and after); needed FLOPs "
        f"{flops / 1e9:.0f} G ({tokens} generated tokens): {flops / fast_s / 1e9:.0f} GFLOP/s = {flops / fast_s / peak:.0%} of it"
    )


if __name__ == "__main__":
    main()
