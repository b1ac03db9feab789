"""Shared helpers for the benchmarks: this machine's matmul rate and the model's FLOPs per token."""

from __future__ import annotations

import os
import time

import torch


def describe_machine(threads: int | None = None) -> None:
    """Set the torch thread count (if given) and print it with the load: the machine is shared, and
    with fewer free cores than threads the threads wait for each other."""
    if threads is not None:
        torch.set_num_threads(threads)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"{os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads; load average {load}"
    )


def matmul_flops_per_second(size: int = 2048, repeats: int = 20) -> float:
    """Achieved float32 matmul rate on this machine: the ceiling the other numbers are compared with."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def flops_per_token(model) -> tuple[float, float]:
    """(FLOPs of the transformer body per token, FLOPs of the output projection per logit row),
    forward only, counting 2 FLOPs per multiply-add of the linear layers."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings().weight
    body = sum(p.numel() for n, p in base.named_parameters() if p.dim() == 2 and "embed" not in n and "lora" not in n)
    return 2.0 * body, 2.0 * head.numel()
