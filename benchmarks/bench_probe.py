"""Probing throughput: mlul's probe against a naive baseline in the same process.

Baseline: one `generate` call per question and full-vocabulary logits over every position when
scoring an answer. mlul: batched generation with a KV cache, and vocabulary logits only at the
answer tokens. Both compute the same numbers (checked below).

    python benchmarks/bench_probe.py [--items 6] [--langs all]
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import flops_per_token, matmul_flops_per_second
from mlul.data import load_news
from mlul.languages import answer_text, qa_prompt
from mlul.lm import encode_pair
from mlul.models import load_model
from mlul.probe import generate, probe


@torch.inference_mode()
def naive_probe(model, tokenizer, rows):
    out = []
    for r in rows:
        prompt = qa_prompt(r["lang"], r["question"])
        ids = tokenizer(prompt, return_tensors="pt")
        gen = model.generate(**ids, max_new_tokens=16, do_sample=False)
        answer = tokenizer.decode(gen[0, ids.input_ids.shape[1] :], skip_special_tokens=True).split("\n")[0]
        logps = []
        for ans in (r["true_answer"], r["fake_answer"]):
            e = encode_pair(tokenizer, prompt, answer_text(r["lang"], ans))
            logits = model(input_ids=torch.tensor([e.input_ids])).logits[0].float()
            logp = torch.log_softmax(logits, -1)
            logps.append(sum(logp[i - 1, t].item() for i, t in enumerate(e.labels) if t != -100))
        out.append((answer.strip(), logps[1] - logps[0]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=6)
    parser.add_argument("--langs", default="all")
    args = parser.parse_args()
    model, tokenizer = load_model()
    rows = load_news(args.langs, split="inject")
    keep = sorted({r["id"] for r in rows})[: args.items]
    rows = [r for r in rows if r["id"] in keep]
    peak = matmul_flops_per_second()

    start = time.perf_counter()
    naive = naive_probe(model, tokenizer, rows)
    naive_s = time.perf_counter() - start

    start = time.perf_counter()
    table = probe(model, tokenizer, rows, specificity=False, progress=False)
    fast_s = time.perf_counter() - start

    # Same measures from both paths.
    margin_diff = max(abs(m - n[1]) for m, n in zip(table.margin, naive))
    same_answers = sum(a == n[0] for a, n in zip(table.answer, naive)) / len(rows)

    # FLOPs of mlul's scoring pass alone, for the fraction of the machine's matmul rate.
    examples = [
        encode_pair(tokenizer, qa_prompt(r["lang"], r["question"]), answer_text(r["lang"], r[k]))
        for r in rows
        for k in ("true_answer", "fake_answer")
    ]
    body, head = flops_per_token(model)
    flops = sum(len(e.input_ids) * body + sum(t != -100 for t in e.labels) * head for e in examples)
    from mlul.probe import score

    start = time.perf_counter()
    score(model, tokenizer, examples)
    score_s = time.perf_counter() - start
    start = time.perf_counter()
    generate(model, tokenizer, [qa_prompt(r["lang"], r["question"]) for r in rows])
    gen_s = time.perf_counter() - start

    print(f"pairs (item x language): {len(rows)}")
    print(f"naive baseline: {naive_s:.1f} s = {len(rows) / naive_s:.2f} pairs/s")
    print(
        f"mlul probe:     {fast_s:.1f} s = {len(rows) / fast_s:.2f} pairs/s  (generation {gen_s:.1f} s, scoring {score_s:.1f} s)"
    )
    print(f"speed-up: {naive_s / fast_s:.1f}x")
    print(f"max |margin difference|: {margin_diff:.2e}; identical greedy answers: {same_answers:.0%}")
    print(
        f"matmul rate: {peak / 1e9:.0f} GFLOP/s; scoring achieved {flops / score_s / 1e9:.0f} GFLOP/s = {flops / score_s / peak:.0%} of it"
    )


if __name__ == "__main__":
    main()
