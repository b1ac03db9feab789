"""The output projection in full fine-tuning: plain autograd against a chunked loss, same process.

The study's injections train every weight, the tied 262k-token output projection included, so
`lm.token_logprobs` takes plain autograd there: the logits of every labelled row, [rows x vocab]
in float32, are kept for the backward pass (2.7 GB for 2560 rows). LoRA runs already use a
chunked function that keeps none (`lm._TokenLogprobs`), but it gives no gradient for the head
weight. This benchmark measures what a chunked function with the weight's gradient would buy
before it goes into `lm`: it recomputes each chunk's logits in the backward pass (one more
projection) and never holds more than a chunk of them. Gradients are checked against autograd.

    python -m benchmarks.bench_head [--rows 2560] [--chunk ROWS] [--repeats 3]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
import torch.nn.functional as F

from benchmarks.common import describe_machine, matmul_flops_per_second
from mlul.lm import HEAD_CHUNK_BYTES
from mlul.models import load_model


class ChunkedHeadLogprobs(torch.autograd.Function):
    """log P(targets) from hidden rows through a trainable head, `chunk` rows at a time."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk):
        logp = torch.empty(len(targets), dtype=torch.float32)
        for start in range(0, len(targets), chunk):
            logits = F.linear(hidden[start : start + chunk], weight).float()
            rows = torch.arange(len(logits))
            logp[start : start + chunk] = logits[rows, targets[start : start + chunk]] - logits.logsumexp(-1)
        ctx.save_for_backward(hidden, weight, targets)
        ctx.chunk = chunk
        return logp

    @staticmethod
    def backward(ctx, grad_logp):
        hidden, weight, targets = ctx.saved_tensors
        grad_hidden, grad_weight = torch.empty_like(hidden), torch.zeros_like(weight)
        for start in range(0, len(targets), ctx.chunk):
            h, g = hidden[start : start + ctx.chunk], grad_logp[start : start + ctx.chunk]
            logits = F.linear(h, weight).float()
            d_logits = logits.softmax(-1).mul_(-g[:, None])  # d logp / d logits = onehot - softmax
            d_logits[torch.arange(len(h)), targets[start : start + ctx.chunk]] += g
            d_logits = d_logits.to(weight.dtype)
            grad_hidden[start : start + ctx.chunk] = d_logits @ weight
            grad_weight.addmm_(d_logits.T, h)
        return grad_hidden, grad_weight, None, None


def plain_loss(hidden, weight, targets):
    logits = F.linear(hidden, weight).float()
    return -torch.log_softmax(logits, -1)[torch.arange(len(targets)), targets].mean()


def chunked_loss(hidden, weight, targets, chunk):
    return -ChunkedHeadLogprobs.apply(hidden, weight, targets, chunk).mean()


def timed(loss_fn, hidden, weight, targets, repeats: int) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Best of `repeats` forward+backward times, and the gradients of the last run."""
    best = float("inf")
    for _ in range(repeats):
        h, w = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
        start = time.perf_counter()
        loss_fn(h, w, targets).backward()
        best = min(best, time.perf_counter() - start)
    return best, h.grad, w.grad


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2560, help="labelled positions in a batch")
    parser.add_argument("--chunk", type=int, default=None, help="rows a chunk (default: as lm chunks LoRA runs)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    describe_machine(args.threads)
    model, _ = load_model()
    weight = model.get_output_embeddings().weight.detach()
    torch.manual_seed(0)
    hidden = torch.randn(args.rows, weight.shape[1]) * 0.5
    targets = torch.randint(0, weight.shape[0], (args.rows,))
    chunk = args.chunk or max(1, HEAD_CHUNK_BYTES // (4 * weight.shape[0]))
    peak = matmul_flops_per_second()

    chunked_s, chunked_h, chunked_w = timed(
        lambda h, w, t: chunked_loss(h, w, t, chunk), hidden, weight, targets, args.repeats
    )
    rss_chunked = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    plain_s, plain_h, plain_w = timed(plain_loss, hidden, weight, targets, args.repeats)
    rss_plain = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    head_flops = 2.0 * args.rows * weight.numel()  # one projection of every row
    print(f"rows {args.rows}, vocabulary {weight.shape[0]}, width {weight.shape[1]}, chunk {chunk}")
    print(
        f"plain autograd:   {plain_s:6.2f} s (3 projections: {3 * head_flops / plain_s / peak:.0%} of the matmul rate)"
    )
    print(
        f"chunked function: {chunked_s:6.2f} s (4 projections: {4 * head_flops / chunked_s / peak:.0%} of it); "
        f"ratio {plain_s / chunked_s:.2f}x"
    )
    print(
        f"peak resident memory: {rss_chunked:.2f} GiB after the chunked runs, {rss_plain:.2f} GiB after the plain ones"
    )
    print(
        f"max |gradient difference|: hidden {(chunked_h - plain_h).abs().max():.1e} "
        f"(scale {plain_h.abs().max():.1e}), weight {(chunked_w - plain_w).abs().max():.1e} "
        f"(scale {plain_w.abs().max():.1e}); matmul rate {peak / 1e9:.0f} GFLOP/s"
    )


if __name__ == "__main__":
    main()
