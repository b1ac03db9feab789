"""The one training loop. Injection and every unlearning method only supply a loss.

A step draws one batch from each named stream of examples (e.g. {"forget": ..., "retain": ...}),
batches hold examples of similar length, and the loss function turns those batches into a scalar.
Batches are packed (`mlul.lm.pack`: several examples per row, each attending only to itself) when
the model allows it, so almost no padded token is computed; the log records the padded share.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mlul.lm import Example, PairExample, collate, length_batches, pack, supports_layout

LossFn = Callable[[torch.nn.Module, dict[str, dict[str, torch.Tensor]]], torch.Tensor | tuple[torch.Tensor, dict]]


@dataclass
class TrainConfig:
    epochs: float = 1.0  # passes over the first stream; ignored when `steps` is set
    steps: int | None = None  # optimizer steps; overrides `epochs`
    batch_size: int = 8  # examples per batch and per stream
    grad_accum: int = 1  # batches per optimizer step
    lr: float = 2e-4
    schedule: str = "linear"  # "linear" (decay to 0), "cosine" or "constant", after warm-up
    warmup: float = 0.1  # fraction of steps with a linear warm-up
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    progress: bool = True  # tqdm bar with the loss
    checkpoint_dir: str | None = None  # save trainable weights here every `checkpoint_every` steps
    checkpoint_every: int = 0
    pack: bool = True  # several examples per row where the model allows it (same losses, less padding)

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.steps is None and self.epochs <= 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("batch_size and grad_accum must be at least 1")
        if self.schedule not in ("linear", "cosine", "constant"):
            raise ValueError(f"unknown schedule {self.schedule!r}; choose from linear, cosine, constant")


def _batch_stream(examples: list[Example], batch_size: int, pad_id: int, rng: random.Random, packed: bool = False):
    """Endless batches of similar-length examples, reshuffled every pass."""
    if not examples:
        raise ValueError("a training stream has no examples")
    batches = length_batches(examples, batch_size)
    layout = pack if packed else collate
    while True:
        rng.shuffle(batches)
        for idx in batches:
            chosen = [examples[i] for i in idx]
            if isinstance(chosen[0], PairExample):
                yield {
                    "chosen": layout([e.chosen for e in chosen], pad_id),
                    "rejected": layout([e.rejected for e in chosen], pad_id),
                }
            else:
                yield layout(chosen, pad_id)


def token_counts(batch: dict) -> tuple[int, int]:
    """(real tokens, token cells computed) of a batch or of a dict of batches; the rest is padding."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum()), batch["input_ids"].numel()
    counts = [token_counts(b) for b in batch.values()]
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def padded_share(examples: list[Example] | list[PairExample], batch_size: int, packed: bool = True) -> float:
    """Share of padded cells over one pass of `_batch_stream`'s batches (no model needed)."""
    real = cells = 0
    for batch in itertools.islice(
        _batch_stream(examples, batch_size, 0, random.Random(0), packed), math.ceil(len(examples) / batch_size)
    ):
        r, c = token_counts(batch)
        real, cells = real + r, cells + c
    return 1 - real / cells


def lr_factor(step: int, total: int, config: TrainConfig) -> float:
    warm = max(1, int(config.warmup * total))
    if step < warm:
        return (step + 1) / warm
    if config.schedule == "constant":
        return 1.0
    frac = (step - warm) / max(1, total - warm)
    return 0.5 * (1 + math.cos(math.pi * frac)) if config.schedule == "cosine" else 1.0 - frac


def num_steps(streams: dict[str, list[Example]], config: TrainConfig) -> int:
    if config.steps is not None:
        return config.steps
    first = next(iter(streams.values()))
    per_epoch = math.ceil(len(first) / config.batch_size)
    return max(1, math.ceil(config.epochs * per_epoch / config.grad_accum))


def train(
    model: torch.nn.Module,
    streams: dict[str, list[Example]],
    loss_fn: LossFn,
    config: TrainConfig,
    pad_id: int,
    on_step: Callable[[int, torch.nn.Module], bool | None] | None = None,
    description: str = "train",
) -> list[dict]:
    """Optimise the trainable parameters of `model` on `loss_fn`; returns a log, one dict a step
    (loss, learning rate, the loss's parts, and so far: real tokens, padded share of the computed
    token cells, seconds).

    `on_step(step, model)` runs after each optimizer step (1-based); returning True stops training
    (used for dose-response probing and stopping rules).
    """
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters; wrap it with mlul.models.add_lora first")
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    total = num_steps(streams, config)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, config))
    packed = config.pack and supports_layout(model)
    iterators = {name: _batch_stream(ex, config.batch_size, pad_id, rng, packed) for name, ex in streams.items()}
    log: list[dict] = []
    model.train()
    bar = tqdm(range(1, total + 1), desc=description, disable=not config.progress, leave=False)
    start = time.perf_counter()
    tokens = cells = 0
    for step in bar:
        record: dict = {"step": step, "lr": schedule.get_last_lr()[0]}
        step_loss = 0.0
        for _ in range(config.grad_accum):
            batches = {name: next(it) for name, it in iterators.items()}
            real, computed = token_counts(batches)
            tokens, cells = tokens + real, cells + computed
            out = loss_fn(model, batches)
            loss, extra = out if isinstance(out, tuple) else (out, {})
            (loss / config.grad_accum).backward()
            step_loss += loss.item() / config.grad_accum
            for key, value in extra.items():
                record[key] = record.get(key, 0.0) + float(value) / config.grad_accum
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        record.update(loss=step_loss, tokens=tokens, pad_share=1 - tokens / cells, seconds=time.perf_counter() - start)
        log.append(record)
        bar.set_postfix(loss=f"{step_loss:.3f}")
        if config.checkpoint_dir and config.checkpoint_every and step % config.checkpoint_every == 0:
            save_trainable(model, Path(config.checkpoint_dir) / f"step-{step}.pt", config)
        if on_step is not None:
            model.eval()
            stop = on_step(step, model)
            model.train()
            if stop:
                break
    model.eval()
    return log


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters being trained (the LoRA adapters, or everything in full fine-tuning)."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_trainable(model: torch.nn.Module, path: Path, config: TrainConfig | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"state": trainable_state(model), "config": asdict(config) if config else None}, tmp)
    tmp.replace(path)
