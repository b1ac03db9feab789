"""Training throughput: mlul's loop against Hugging Face `Trainer`, same data, model, LoRA, steps.

Injection (supervised loss) and unlearning (gradient ascent, the paper's approach: a `Trainer`
subclass whose `compute_loss` flips the sign) are both measured. The `Trainer` computes
vocabulary logits at every position; mlul only at labelled ones.

    python benchmarks/bench_train.py [--items 6] [--steps 12]
    python benchmarks/bench_train.py --memory-only      # peak memory of one mlul injection run
"""

from __future__ import annotations

import argparse
import copy
import resource
import tempfile
import time

import torch
from transformers import Trainer, TrainingArguments

from benchmarks.common import flops_per_token, matmul_flops_per_second
from mlul.data import load_news
from mlul.inject import InjectConfig, injection_set
from mlul.lm import collate, lm_loss
from mlul.models import add_lora, load_model
from mlul.train import TrainConfig, train
from mlul.unlearn import forget_set


class AscentTrainer(Trainer):
    """The paper's unlearning: the usual loss with its sign flipped."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        return (-outputs.loss, outputs) if return_outputs else -outputs.loss


def hf_run(model, tokenizer, examples, steps, batch_size, trainer_class=Trainer) -> float:
    dataset = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]

    def collator(features):
        from mlul.lm import Example

        return collate([Example(f["input_ids"], f["labels"]) for f in features], tokenizer.pad_token_id)

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=batch_size,
            max_steps=steps,
            learning_rate=1e-4,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            use_cpu=True,
            dataloader_num_workers=0,
            disable_tqdm=True,
            remove_unused_columns=False,
        )
        trainer = trainer_class(model=model, args=args, train_dataset=dataset, data_collator=collator)
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start


def mlul_run(model, tokenizer, examples, steps, batch_size, sign=1.0) -> tuple[float, int, int]:
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=1e-4, progress=False)
    log = train(model, {"train": examples}, lambda m, b: sign * lm_loss(m, b["train"]), config, tokenizer.pad_token_id)
    return log[-1]["seconds"], log[-1]["tokens"], len(log)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=6)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--memory-only", action="store_true")
    args = parser.parse_args()
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
    # Every step of both runs sees the same batches in count and size: a fixed number of steps over
    # the same examples and batch size. Token counts are for mlul's batches (HF's are the same data).
    steps, bs = args.steps, args.batch_size
    peak = matmul_flops_per_second()
    body, head = flops_per_token(base)
    labelled = sum(sum(t != -100 for t in e.labels) for e in examples) / len(examples)
    length = sum(len(e.input_ids) for e in examples) / len(examples)
    print(
        f"{len(examples)} examples, mean length {length:.0f} tokens, {labelled:.0f} labelled; {steps} steps of batch {bs}"
    )

    for name, ex, sign, trainer_class in (
        ("injection (SFT)", examples, 1.0, Trainer),
        ("unlearning (gradient ascent)", forget_set(tokenizer, rows, ["en", "fr"]), -1.0, AscentTrainer),
    ):
        hf_s = hf_run(add_lora(copy.deepcopy(base)), tokenizer, ex, steps, bs, trainer_class)
        ours_s, tokens, n = mlul_run(add_lora(copy.deepcopy(base)), tokenizer, ex, steps, bs, sign)
        # Forward + backward is about 3x the forward FLOPs (the backward's input gradients cost
        # about 2x; the frozen weights need no weight gradients, so this slightly overcounts).
        labelled_tokens = tokens * labelled / length
        flops = 3 * (tokens * body + labelled_tokens * head)
        print(
            f"{name}: HF Trainer {hf_s:.1f} s ({tokens / hf_s:.0f} tok/s), mlul {ours_s:.1f} s ({tokens / ours_s:.0f} tok/s): "
            f"{hf_s / ours_s:.2f}x; {n / ours_s:.2f} steps/s vs {steps / hf_s:.2f}; mlul achieved {flops / ours_s / 1e9:.0f} GFLOP/s "
            f"= {flops / ours_s / peak:.0%} of the {peak / 1e9:.0f} GFLOP/s matmul rate"
        )


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
