"""End to end: `mlul reproduce --fast --items 3` against the same pipeline built the paper's way.

The paper's way, same data, same steps, same probes at the same points: injection with Hugging
Face `Trainer`, gradient ascent with a `Trainer` whose loss has its sign flipped, and probing with
batched HF `generate` (16 new tokens) plus one full sequence per scored answer with vocabulary
logits at every position. It is built by swapping those pieces into the same `reproduce`, so the
two runs differ only in how each step computes, not in what it computes. Both start from a loaded
model and an empty result cache.

    python -m benchmarks.bench_end_to_end [--items 3] [--controls 3] [--tiny]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from unittest import mock

import numpy as np
import pandas as pd
import torch
from transformers import Trainer, TrainerCallback

from benchmarks.bench_train import AscentTrainer, hf_run
from benchmarks.common import describe_machine
from mlul.cache import Cache
from mlul.experiment import Lab, fast_reproduce_config, reproduce
from mlul.lm import collate
from mlul.models import load_model, load_tokenizer, tiny_model
from mlul.train import num_steps

NAIVE_NEW_TOKENS = 16


@torch.inference_mode()
def full_logits_score(model, tokenizer, examples, batch_size: int = 32, progress: bool = False, desc: str = ""):
    """Score each example as one sequence with vocabulary logits at every position (HF's way)."""
    logp, count, exact = np.zeros(len(examples)), np.zeros(len(examples)), np.zeros(len(examples), dtype=bool)
    for start in range(0, len(examples), batch_size):
        idx = list(range(start, min(start + batch_size, len(examples))))
        batch = collate([examples[i] for i in idx], tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        logprobs = torch.log_softmax(logits[:, :-1], -1)
        labels = batch["labels"][:, 1:]
        mask = labels != -100
        picked = logprobs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
        hits = (logprobs.argmax(-1) == labels) | ~mask
        logp[idx] = picked.sum(1).double().numpy()
        count[idx] = mask.sum(1).numpy()
        exact[idx] = hits.all(1).numpy()
    return pd.DataFrame({"logp": logp, "n_tokens": count, "exact": exact})


def trainer_train(model, streams, loss_fn, config, pad_id, on_step=None, description: str = "") -> list[dict]:
    """`mlul.train.train`'s signature, run by HF `Trainer`: supervised on a "train" stream, gradient
    ascent on a "forget" stream (only `ga` is built the paper's way)."""
    if set(streams) not in ({"train"}, {"forget"}):
        raise ValueError(f"the paper's-way baseline runs injection and gradient ascent only, not {sorted(streams)}")
    name = next(iter(streams))
    trainer_class = Trainer if name == "train" else AscentTrainer

    class Probes(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if on_step is not None:
                on_step(state.global_step, kwargs["model"])

    steps = num_steps(streams, config)
    hf_run(
        model,
        None,
        streams[name],
        steps,
        config.batch_size,
        trainer_class,
        lr=config.lr,
        pad_id=pad_id,
        callbacks=[Probes()],
    )
    return [{"step": steps}]


@contextmanager
def papers_way():
    with (
        mock.patch("mlul.probe.supports_layout", lambda model: False),
        mock.patch("mlul.probe.score", full_logits_score),
        mock.patch("mlul.probe.answer_budget", lambda tokenizer, rows, margin=0: NAIVE_NEW_TOKENS),
        mock.patch("mlul.inject.train", trainer_train),
        mock.patch("mlul.train.train", trainer_train),
    ):
        yield


def timed_reproduce(config, model, tokenizer) -> tuple[float, pd.DataFrame]:
    with tempfile.TemporaryDirectory() as folder:
        lab = Lab(cache=Cache(folder))
        lab._base, lab._tokenizer = model, tokenizer
        lab.fingerprint = {"model": "benchmark", "data": lab.data.fingerprint}  # no weights hash: a fresh cache
        start = time.perf_counter()
        result = reproduce(config, lab, progress=False)
        return time.perf_counter() - start, result.summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=3)
    parser.add_argument("--controls", type=int, default=3, help="control stories (the fast run has 12)")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model: checks the mechanics only")
    args = parser.parse_args()
    describe_machine()
    config = fast_reproduce_config()
    config = replace(config, spread=replace(config.spread, items=args.items, control_items=args.controls))
    if args.tiny:
        tokenizer = load_tokenizer()
        model = tiny_model(tokenizer)
    else:
        model, tokenizer = load_model()
    print(
        f"reproduce --fast --items {args.items}: {args.items} injected + {config.spread.control_items} control "
        f"stories, settings {config.settings}, method {config.methods}, sham {config.spread.sham}"
    )
    ours_s, ours = timed_reproduce(config, model, tokenizer)
    print(f"mlul:          {ours_s:7.1f} s")
    with papers_way():
        theirs_s, theirs = timed_reproduce(config, model, tokenizer)
    print(f"paper's way:   {theirs_s:7.1f} s")
    print(f"speed-up: {theirs_s / ours_s:.2f}x")
    key = ["stage", "method", "setting", "lang"]
    both = ours.merge(theirs, on=key, suffixes=("", "_paper"))
    diff = (both.margin_shift - both.margin_shift_paper).abs()
    print(
        f"mean margin shift, mlul vs paper's way (different optimizers' schedules, so not identical): "
        f"largest |difference| {diff.max():.2f} nats over {len(both)} cells"
    )


if __name__ == "__main__":
    main()
