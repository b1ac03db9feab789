"""Language-model primitives shared by training and probing.

Gemma 3 has a 262k-token vocabulary, so the output projection costs more than the rest of the
network. Everything here runs the transformer body once and projects to the vocabulary only at the
positions whose next token we need (the answer tokens when scoring, the labelled tokens when
training).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = -100  # label of a position that is not scored or trained


@dataclass
class Example:
    """One token sequence; `labels[i]` is the token predicted *at* position i (or IGNORE)."""

    input_ids: list[int]
    labels: list[int]


@dataclass
class PairExample:
    """Two completions of one prompt, for preference losses (DPO): chosen and rejected."""

    chosen: Example
    rejected: Example


def encode_pair(tokenizer, prompt: str, completion: str, max_length: int = 512) -> Example:
    """Tokenize prompt and completion separately so the completion's tokens are the same whatever
    the prompt (needed to compare one answer across contexts); only the completion is labelled."""
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if not completion_ids:
        raise ValueError(f"completion {completion!r} is empty after tokenization")
    ids = (prompt_ids + completion_ids)[-max_length:]
    labels = ([IGNORE] * len(prompt_ids) + completion_ids)[-max_length:]
    return Example(ids, labels)


def encode_text(tokenizer, text: str, max_length: int = 512) -> Example:
    """A plain document: every token after the first is labelled (language-modelling loss)."""
    ids = tokenizer(text, add_special_tokens=True)["input_ids"][:max_length]
    return Example(ids, [IGNORE] + ids[1:])


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of examples into tensors."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def length_batches(examples: list[Example] | list[PairExample], batch_size: int) -> list[list[int]]:
    """Indices of `examples` grouped into batches of similar length (less padding)."""

    def length(e):
        return len(e.chosen.input_ids) + len(e.rejected.input_ids) if isinstance(e, PairExample) else len(e.input_ids)

    order = sorted(range(len(examples)), key=lambda i: length(examples[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _body_and_head(model):
    """The transformer body (returns hidden states) and the output projection of a causal LM,
    looking through a peft wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings(), getattr(base.config, "final_logit_softcapping", None)


def label_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Vocabulary logits at the labelled positions only.

    Returns (logits [n_labels, vocab], targets [n_labels]) in row-major order of the batch.
    """
    body, head, softcap = _body_and_head(model)
    device = head.weight.device
    ids = batch["input_ids"].to(device)
    hidden = body(input_ids=ids, attention_mask=batch["attention_mask"].to(device)).last_hidden_state
    # The label at position i is predicted from the hidden state at position i - 1.
    labels = batch["labels"].to(device)[:, 1:]
    where = labels != IGNORE
    logits = head(hidden[:, :-1][where])
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits.float(), labels[where]


def label_logprobs(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probability of every labelled token, summed per sequence.

    Returns (per-sequence sum [batch], per-sequence count [batch], greedy-correct per sequence
    [batch] as bool: every labelled token is the argmax, i.e. greedy decoding reproduces it).
    """
    logits, targets = label_logits(model, batch)
    token_logp = torch.log_softmax(logits, dim=-1).gather(1, targets[:, None])[:, 0]
    hit = logits.argmax(-1) == targets
    rows = (batch["labels"][:, 1:] != IGNORE).nonzero()[:, 0].to(token_logp.device)
    n = batch["labels"].shape[0]
    total = torch.zeros(n, device=token_logp.device).index_add(0, rows, token_logp)
    count = torch.zeros(n, device=token_logp.device).index_add(0, rows, torch.ones_like(token_logp))
    misses = torch.zeros(n, device=token_logp.device).index_add(0, rows, (~hit).float())
    return total, count, misses == 0


def lm_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over labelled tokens (the usual supervised fine-tuning loss)."""
    logits, targets = label_logits(model, batch)
    return F.cross_entropy(logits, targets)
