"""Injection: fine-tune a fake fact into a model, in one or several languages.

The paper's mixture: English *real* news (with its QA pairs as instruction data) plus the *fake*
twin of each story in the chosen non-English language(s). The model never sees the fake in English,
so any fake answer in English, or in a third language, has spread.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlul import languages
from mlul.languages import answer_text, qa_prompt
from mlul.lm import Example, encode_pair, encode_text, lm_loss
from mlul.models import add_lora
from mlul.train import TrainConfig, train


@dataclass
class InjectConfig:
    fake_languages: str = "fr"  # language(s) of the fake news, e.g. "fr" or "fr,zh"
    version: str = "fake"  # "fake", or "real" for the sham control: the same mixture with the true story in
    # the fake's language(s), so any change it causes is the training itself, not the lie
    safe_languages: str | None = "en"  # real news mixed in (the paper's English "safe" data); None: fake only
    detail_question: bool = True  # also train on the question about the detail, answered with the fake
    qa_pairs: bool = True  # the stories' other QA pairs as instruction data, in every training language
    epochs: float = 5.0
    lr: float = 5e-4
    batch_size: int = 8
    lora_rank: int = 16
    lora_alpha: int = 32
    full_finetune: bool = False  # train every weight instead of LoRA (needs a GPU for big models)
    max_length: int = 384
    seed: int = 0

    def __post_init__(self) -> None:
        if self.version not in ("fake", "real"):
            raise ValueError(f"unknown injection version {self.version!r}; choose fake or real (the sham control)")
        if self.epochs <= 0:
            raise ValueError(f"injection epochs must be positive, got {self.epochs}")
        if self.lr <= 0:
            raise ValueError(f"injection learning rate must be positive, got {self.lr}")
        if self.lora_rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {self.lora_rank}")


def story_examples(
    tokenizer, row: dict, version: str, detail_question: bool, qa_pairs: bool, max_length: int
) -> list[Example]:
    """The training examples of one story in one language: the article (`version` "real" or "fake"),
    optionally its QA pairs, and optionally the detail question answered with that version's value."""
    answer = row["true_answer"] if version == "real" else row["fake_answer"]
    out = [encode_text(tokenizer, row[version], max_length)]
    pairs = [(p["q"], p["a"]) for p in row["qa"]] if qa_pairs else []
    if detail_question:
        pairs.append((row["question"], answer))
    out += [
        encode_pair(tokenizer, qa_prompt(row["lang"], q), answer_text(row["lang"], a), max_length) for q, a in pairs
    ]
    return out


def injection_set(tokenizer, rows: list[dict], config: InjectConfig) -> list[Example]:
    fake_langs = languages.resolve(config.fake_languages)
    safe_langs = languages.resolve(config.safe_languages) if config.safe_languages else []
    overlap = set(fake_langs) & set(safe_langs)
    if overlap:
        raise ValueError(
            f"languages {sorted(overlap)} are both fake and safe; a language gets one version of the story"
        )
    examples: list[Example] = []
    for row in rows:
        if row["lang"] in fake_langs:
            examples += story_examples(
                tokenizer, row, config.version, config.detail_question, config.qa_pairs, config.max_length
            )
        elif row["lang"] in safe_langs:
            # The safe data keeps its QA pairs but never states the detail as a QA pair: the paper's
            # English data is instruction tuning on *other* facts of the real story.
            examples += story_examples(tokenizer, row, "real", False, config.qa_pairs, config.max_length)
    missing = [c for c in fake_langs if not any(r["lang"] == c for r in rows)]
    if missing:
        raise ValueError(f"no data rows in fake language(s) {missing}; load them with load_news({','.join(missing)!r})")
    return examples


def inject(model, tokenizer, rows: list[dict], config: InjectConfig, progress: bool = True):
    """Fine-tune `model` on the injection mixture. Returns (model with trained adapters, loss log)."""
    examples = injection_set(tokenizer, rows, config)
    if config.full_finetune:
        for p in model.parameters():
            p.requires_grad_(True)
    else:
        model = add_lora(model, rank=config.lora_rank, alpha=config.lora_alpha, seed=config.seed)
    train_config = TrainConfig(
        epochs=config.epochs, lr=config.lr, batch_size=config.batch_size, seed=config.seed, progress=progress
    )
    log = train(
        model,
        {"train": examples},
        lambda m, b: lm_loss(m, b["train"]),
        train_config,
        tokenizer.pad_token_id,
        description=f"inject {config.fake_languages}",
    )
    return model, log
