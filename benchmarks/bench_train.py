"""Training throughput: mlul's loop against Hugging Face `Trainer`, same data, model, LoRA, steps.

Injection (supervised loss) and unlearning (gradient ascent, the paper's approach: a `Trainer`
subclass whose `compute_loss` flips the sign) are both measured. The `Trainer` computes
vocabulary logits at every position of right-padded batches; mlul packs several examples per row
and projects to the vocabulary only at labelled positions, a few hundred rows at a time. For
reference mlul also runs without packing (`TrainConfig(pack=False)`).

    python -m benchmarks.bench_train [--items 6] [--steps 12]
    python -m benchmarks.bench_train --memory-only      # peak memory of one mlul injection run
"""

from __future__ import annotations

import argparse
import copy
import resource
import tempfile
import time

import torch
from transformers import Trainer, TrainingArguments

from benchmarks.common import describe_machine, flops_per_token, matmul_flops_per_second
from mlul.data import load_news
from mlul.inject import InjectConfig, injection_set
from mlul.lm import Example, collate, lm_loss
from mlul.models import add_lora, load_model
from mlul.train import TrainConfig, padded_share, train
from mlul.unlearn import forget_set


class AscentTrainer(Trainer):
    """The paper's unlearning: the usual loss with its sign flipped."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        return (-outputs.loss, outputs) if return_outputs else -outputs.loss


def hf_run(
    model, tokenizer, examples, steps, batch_size, trainer_class=Trainer, lr=1e-4, pad_id=None, callbacks=None
) -> float:
    dataset = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    pad_id = tokenizer.pad_token_id if pad_id is None else pad_id

    def collator(features):
        return collate([Example(f["input_ids"], f["labels"]) for f in features], pad_id)

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=batch_size,
            max_steps=steps,
            learning_rate=lr,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            use_cpu=True,
            dataloader_num_workers=0,
            disable_tqdm=True,
            remove_unused_columns=False,
        )
        trainer = trainer_class(
            model=model, args=args, train_dataset=dataset, data_collator=collator, callbacks=callbacks
        )
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start


def mlul_run(model, tokenizer, examples, steps, batch_size, sign=1.0, pack=True) -> dict:
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=1e-4, progress=False, pack=pack)
    log = train(model, {"train": examples}, lambda m, b: sign * lm_loss(m, b["train"]), config, tokenizer.pad_token_id)
    return log[-1]


def lora_flops_per_token(model) -> float:
    """Forward FLOPs of the LoRA adapters per token (2 per multiply-add)."""
    return 2.0 * sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=6)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    describe_machine(args.threads)
    base, tokenizer = load_model()
    rows = load_news("en,fr", split="inject")
    keep = sorted({r["id"] for r in rows})[: args.items]
    rows = [r for r in rows if r["id"] in keep]
    examples = injection_set(tokenizer, rows, InjectConfig(fake_languages="fr"))
    if args.memory_only:
        mlul_run(add_lora(copy.deepcopy(base)), tokenizer, examples, args.steps, args.batch_size)
        print(
            f"peak resident memory of an injection run: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
        )
        return
    # Every step of every run sees the same number of examples: a fixed number of steps over the same
    # examples and batch size. FLOPs are counted on mlul's real (unpadded) tokens.
    steps, bs = args.steps, args.batch_size
    body, head = flops_per_token(base)
    lora = lora_flops_per_token(add_lora(copy.deepcopy(base)))
    print(f"{steps} steps of batch {bs}; LoRA rank 16 on every linear layer")

    for name, ex, sign, trainer_class in (
        ("injection (SFT)", examples, 1.0, Trainer),
        ("unlearning (gradient ascent)", forget_set(tokenizer, rows, ["en", "fr"]), -1.0, AscentTrainer),
    ):
        labelled = sum(sum(t != -100 for t in e.labels) for e in ex) / len(ex)
        length = sum(len(e.input_ids) for e in ex) / len(ex)
        peak_before = matmul_flops_per_second()
        hf_s = hf_run(add_lora(copy.deepcopy(base)), tokenizer, ex, steps, bs, trainer_class)
        ours = mlul_run(add_lora(copy.deepcopy(base)), tokenizer, ex, steps, bs, sign)
        unpacked = mlul_run(add_lora(copy.deepcopy(base)), tokenizer, ex, steps, bs, sign, pack=False)
        peak = (peak_before + matmul_flops_per_second()) / 2
        ours_s, tokens = ours["seconds"], ours["tokens"]
        forward = tokens * body + tokens * labelled / length * head
        # Frozen weights need only input gradients in the backward pass (as much as the forward);
        # the adapters need both (twice). The earlier count, 3x the forward, overstates the work.
        needed = 2 * forward + 3 * tokens * lora
        print(
            f"{name}: {len(ex)} examples, mean length {length:.0f} tokens, {labelled:.0f} labelled; padded share "
            f"{ours['pad_share']:.1%} packed, {unpacked['pad_share']:.1%} unpacked "
            f"(one pass, packed: {padded_share(ex, bs):.1%})\n"
            f"  HF Trainer {hf_s:.1f} s ({tokens / hf_s:.0f} tok/s); mlul {ours_s:.1f} s ({tokens / ours_s:.0f} tok/s): "
            f"{hf_s / ours_s:.2f}x; mlul unpacked {unpacked['seconds']:.1f} s ({hf_s / unpacked['seconds']:.2f}x)\n"
            f"  matmul rate {peak / 1e9:.0f} GFLOP/s; mlul needed FLOPs {needed / ours_s / 1e9:.0f} GFLOP/s = "
            f"{needed / ours_s / peak:.0%} of it (counted as 3x the forward, as before: {3 * forward / ours_s / peak:.0%})"
        )


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
