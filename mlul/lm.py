"""Language-model primitives shared by training and probing.

Gemma 3 has a 262k-token vocabulary, so the output projection costs more than the rest of the
network. Everything here runs the transformer body once and projects to the vocabulary only at the
positions whose next token we need (the answer tokens when scoring, the labelled tokens when
training), a few hundred rows at a time so that no [tokens x vocabulary] tensor is kept.

Two batch layouts:
- `collate`: one example per row, right-padded. Works with any model.
- layouts with an explicit attention mask, where several sequences share a row, each with its own
  position ids: `pack` puts several training examples in one row (almost no padding), and
  `group_batch` puts a prompt and all its completions in one row, every completion attending to the
  prompt, so the prompt runs once for all of them (prefix sharing). `score_groups` can then go on
  from the same prompt keys and values to greedy generation. These need a model whose attention
  layers take a prepared mask (`supports_layout`: Gemma 3 and other models built on transformers'
  mask interface, with sdpa or eager attention); elsewhere the callers use `collate`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = -100  # label of a position that is not scored or trained
HEAD_CHUNK_BYTES = 2**28  # vocabulary logits computed at once (256 MB: 256 rows of Gemma 3's vocabulary)


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


@dataclass
class PromptGroup:
    """One prompt and the completions scored after it; tokenized as `encode_pair` does. Tokens of
    completion j before `first_scored[j]` are read but not scored (e.g. a question after a shared
    article); by default every completion token is scored."""

    prompt_ids: list[int]
    completions: list[list[int]]
    first_scored: list[int] | None = None


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


def encode_group(tokenizer, prompt: str, completions: list[str]) -> PromptGroup:
    """A prompt and its completions, each completion tokenized on its own (as in `encode_pair`,
    without its truncation: probe prompts are short)."""
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in completions]
    for text, tokens in zip(completions, ids):
        if not tokens:
            raise ValueError(f"completion {text!r} is empty after tokenization")
    return PromptGroup(prompt_ids, ids)


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


# --- layouts with an explicit attention mask ---------------------------------------------------


@dataclass
class _Segment:
    """A run of tokens in a layout row: its tokens, first position id, and which segment of the
    same row it may also attend to (its prompt), or None."""

    tokens: list[int]
    start: int
    parent: int | None


def _layout(rows: list[list[_Segment]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(sum(len(s.tokens) for s in row) for row in rows)
    shape = (len(rows), width)
    ids = torch.full(shape, pad_id, dtype=torch.long)
    positions = torch.zeros(shape, dtype=torch.long)
    segments = torch.full(shape, -1, dtype=torch.long)
    parents = torch.full(shape, -1, dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for k, s in enumerate(row):
            n = len(s.tokens)
            ids[r, at : at + n] = torch.tensor(s.tokens, dtype=torch.long)
            positions[r, at : at + n] = torch.arange(s.start, s.start + n)
            segments[r, at : at + n] = k
            parents[r, at : at + n] = k if s.parent is None else s.parent
            at += n
    return {
        "input_ids": ids,
        "position_ids": positions,
        "segment_ids": segments,
        "parent_ids": parents,
        "attention_mask": (segments >= 0).long(),  # real tokens, for counting; the body gets the masks
    }


def pack(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Several examples per row, each with position ids from 0 and attending only to itself: the
    same losses as `collate` with little padding. Sequence k of the batch is `examples[k]`."""
    rows = _pack_rows([len(e.input_ids) for e in examples])
    batch = _layout([[_Segment(examples[i].input_ids, 0, None) for i in row] for row in rows], pad_id)
    source, target, owner = [], [], []
    for r, row in enumerate(rows):
        at = r * batch["input_ids"].shape[1]
        for i in row:
            labels = examples[i].labels
            # The label at position j is predicted from the hidden state at j - 1 of the same example.
            for j in range(1, len(labels)):
                if labels[j] != IGNORE:
                    source.append(at + j - 1)
                    target.append(labels[j])
                    owner.append(i)
            at += len(labels)
    return batch | _labels(source, target, owner, len(examples))


def _first_fit(lengths: list[int], width: int) -> list[list[int]]:
    rows: list[list[int]] = []
    fill: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, f in enumerate(fill) if f + lengths[i] <= width), None)
        if row is None:
            rows.append([])
            fill.append(0)
            row = len(rows) - 1
        rows[row].append(i)
        fill[row] += lengths[i]
    return rows


def _pack_rows(lengths: list[int]) -> list[list[int]]:
    """Indices per row: first-fit decreasing into the row width, from the longest example to twice
    that, that computes the fewest token cells (ties: the narrowest, as attention grows with the
    square of the width)."""
    longest = max(lengths)

    def cells(rows):
        return len(rows) * max(sum(lengths[i] for i in row) for row in rows)

    layouts = [_first_fit(lengths, w) for w in range(longest, min(2 * longest, sum(lengths)) + 1)]
    return min(layouts, key=lambda rows: (cells(rows), max(sum(lengths[i] for i in row) for row in rows)))


def shared_prefix(examples: list[Example]) -> PromptGroup:
    """The examples as one prompt (their longest common prefix of unlabelled tokens) and the rest
    of each as a completion, scored where the example is labelled. Exact: built from the tokens."""
    prefix = min(len(e.input_ids) for e in examples) - 1
    first = examples[0].input_ids
    for e in examples:
        labelled = next(i for i, t in enumerate(e.labels) if t != IGNORE)
        if e.labels[labelled:] != e.input_ids[labelled:]:
            raise ValueError("shared_prefix needs examples labelled from one token to the end (encode_pair)")
        same = next((i for i, (a, b) in enumerate(zip(first, e.input_ids)) if a != b), len(first))
        prefix = min(prefix, same, labelled)
    prefix = max(prefix, 1)
    return PromptGroup(
        first[:prefix],
        [e.input_ids[prefix:] for e in examples],
        [next(i for i, t in enumerate(e.labels) if t != IGNORE) - prefix for e in examples],
    )


def group_batch(groups: list[PromptGroup], pad_id: int) -> dict[str, torch.Tensor]:
    """One row per group: the prompt, then each completion without its last token (it is only
    predicted, never read), at position ids that continue the prompt's. Sequence k of the batch is
    the k-th completion in the order of `groups`; `prompt_ends` holds each row's last prompt index."""
    rows, source, target, owner = [], [], [], []
    width = max(len(g.prompt_ids) + sum(len(c) - 1 for c in g.completions) for g in groups)
    k = 0
    for r, g in enumerate(groups):
        p = len(g.prompt_ids)
        rows.append([_Segment(g.prompt_ids, 0, None)] + [_Segment(c[:-1], p, 0) for c in g.completions])
        at = r * width + p
        for c, f in zip(g.completions, g.first_scored or [0] * len(g.completions)):
            # Token 0 is predicted from the prompt's last position, token t from the completion's t - 1.
            predictors = [r * width + p - 1] + [at + t for t in range(len(c) - 1)]
            source += predictors[f:]
            target += c[f:]
            owner += [k] * (len(c) - f)
            at += len(c) - 1
            k += 1
    batch = _layout(rows, pad_id)
    batch["prompt_ends"] = torch.tensor([len(g.prompt_ids) - 1 for g in groups])
    return batch | _labels(source, target, owner, k)


def _labels(source: list[int], target: list[int], owner: list[int], n: int) -> dict[str, torch.Tensor]:
    return {
        "label_source": torch.tensor(source, dtype=torch.long),
        "label_target": torch.tensor(target, dtype=torch.long),
        "label_owner": torch.tensor(owner, dtype=torch.long),
        "n_sequences": torch.tensor(n),
    }


def supports_layout(model) -> bool:
    """Whether `model` takes the prepared attention masks of `pack` and `group_batch`: attention
    through sdpa or eager, and only full or sliding-window layers (Gemma 3, Llama, Qwen, ...)."""
    body, _, _ = _body_and_head(model)
    config = body.config
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False
    if getattr(config, "use_bidirectional_attention", False):
        return False
    types = getattr(config, "layer_types", None)
    if types is None:
        return getattr(config, "sliding_window", None) is None
    return set(types) <= {"full_attention", "sliding_attention"}


def layout_masks(config, batch: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The 4D attention masks of a layout batch, one per layer type: a query sees the earlier
    tokens of its own segment and of its parent segment; sliding-window layers also require the
    key to be less than `sliding_window` positions back (transformers' rule). Padding attends to
    itself only, so that no softmax row is empty."""
    segments, parents, positions = batch["segment_ids"], batch["parent_ids"], batch["position_ids"]
    width = segments.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool, device=segments.device).tril()
    seg_q, seg_k = segments[:, :, None], segments[:, None, :]
    visible = causal & (seg_k >= 0) & ((seg_k == seg_q) | (seg_k == parents[:, :, None]))
    visible |= torch.eye(width, dtype=torch.bool, device=segments.device) & (seg_q < 0)
    types = set(getattr(config, "layer_types", None) or ["full_attention"])
    masks = {}
    for kind in types:
        mask = visible
        if kind == "sliding_attention":
            distance = positions[:, :, None] - positions[:, None, :]
            mask = visible & ((distance < config.sliding_window) | (seg_q < 0))
        masks[kind] = _as_attention_mask(config, mask[:, None], dtype)
    return masks


def _as_attention_mask(config, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if config._attn_implementation == "sdpa":
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def _mask_argument(config, masks: dict[str, torch.Tensor]):
    # Models with several layer types take a dict; the others one prepared 4D mask.
    return masks if getattr(config, "layer_types", None) else masks["full_attention"]


def _body_and_head(model):
    """The transformer body (returns hidden states) and the output projection of a causal LM,
    looking through a peft wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings(), getattr(base.config, "final_logit_softcapping", None)


def _hidden(model, batch: dict[str, torch.Tensor], cache=None):
    """Hidden states [rows, width, dim] of either layout."""
    body, head, _ = _body_and_head(model)
    device = head.weight.device
    ids = batch["input_ids"].to(device)
    if "segment_ids" not in batch:
        return body(input_ids=ids, attention_mask=batch["attention_mask"].to(device), use_cache=False).last_hidden_state
    layout = {k: v.to(device) for k, v in batch.items() if k in ("segment_ids", "parent_ids", "position_ids")}
    masks = layout_masks(body.config, layout, head.weight.dtype)
    kwargs = {_cache_argument(body): cache, "use_cache": True} if cache is not None else {"use_cache": False}
    return body(
        input_ids=ids,
        position_ids=layout["position_ids"],
        attention_mask=_mask_argument(body.config, masks),
        **kwargs,
    ).last_hidden_state


def _cache_argument(body) -> str:
    # transformers 5 renamed `past_key_values` to `cache`.
    return "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"


def _label_index(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(flat index of the hidden state predicting each label, the label, its sequence, number of
    sequences), for either layout."""
    if "label_source" in batch:
        return batch["label_source"], batch["label_target"], batch["label_owner"], int(batch["n_sequences"])
    labels = batch["labels"]
    rows, cols = (labels[:, 1:] != IGNORE).nonzero(as_tuple=True)
    return rows * labels.shape[1] + cols, labels[rows, cols + 1], rows, labels.shape[0]


def label_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Vocabulary logits at the labelled positions only (for losses that need the whole
    distribution, e.g. a KL divergence).

    Returns (logits [n_labels, vocab], targets [n_labels]) in the batch's label order.
    """
    _, head, softcap = _body_and_head(model)
    hidden = _hidden(model, batch)
    source, targets, _, _ = _label_index(batch)
    device = head.weight.device
    logits = head(hidden.reshape(-1, hidden.shape[-1])[source.to(device)])
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits.float(), targets.to(device)


class _TokenLogprobs(torch.autograd.Function):
    """log P(target) at hidden rows, a chunk of rows at a time, with the gradient with respect to
    the hidden states worked out in the forward pass: per label it is (1 - tanh^2) W[target] -
    E_row, E_row = sum_v p_v (1 - tanh_v^2) W_v (tanh terms only with a logit soft-cap). The head
    weight is frozen (LoRA), so no [labels x vocabulary] tensor is kept for the backward pass."""

    @staticmethod
    def forward(ctx, hidden, weight, rows, targets, softcap, chunk):
        n_rows = hidden.shape[0]
        logp = torch.empty(len(targets), dtype=torch.float32, device=hidden.device)
        best = torch.empty(n_rows, dtype=torch.long, device=hidden.device)
        expected = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        slope = torch.ones(len(targets), dtype=torch.float32, device=hidden.device)
        order = torch.argsort(rows, stable=True)
        bounds = torch.searchsorted(rows[order], torch.arange(0, n_rows + chunk, chunk, device=rows.device))
        for c, start in enumerate(range(0, n_rows, chunk)):
            stop = min(start + chunk, n_rows)
            raw = F.linear(hidden[start:stop], weight)
            capped = torch.tanh(raw / softcap) if softcap else None
            logits = (capped * softcap if softcap else raw).float()
            lse = torch.logsumexp(logits, -1)
            best[start:stop] = logits.argmax(-1)
            mine = order[bounds[c] : bounds[c + 1]]
            local = rows[mine] - start
            logp[mine] = logits[local, targets[mine]] - lse[local]
            if expected is not None:
                p = logits.sub_(lse[:, None]).exp_()
                if softcap:
                    factor = 1 - capped.float() ** 2
                    slope[mine] = factor[local, targets[mine]]
                    p.mul_(factor)
                expected[start:stop] = p.to(weight.dtype) @ weight
        ctx.mark_non_differentiable(best)
        if expected is not None:
            ctx.save_for_backward(expected, weight, rows, targets, slope)
        return logp, best

    @staticmethod
    def backward(ctx, grad_logp, grad_best):
        expected, weight, rows, targets, slope = ctx.saved_tensors
        per_label = (slope[:, None] * weight[targets].float() - expected[rows].float()) * grad_logp[:, None]
        grad = torch.zeros_like(expected).index_add_(0, rows, per_label.to(expected.dtype))
        return grad, None, None, None, None, None


def token_logprobs(
    model, hidden: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log P(targets[i]) from hidden state rows[i] [n_labels], greedy token of each hidden row
    [n_rows]). Several labels may share one hidden row (completions of one prompt)."""
    _, head, softcap = _body_and_head(model)
    weight = head.weight
    if weight.requires_grad and torch.is_grad_enabled():  # full fine-tuning: plain autograd
        logits = head(hidden)
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        logits = logits.float()
        return torch.log_softmax(logits, -1)[rows, targets], logits.argmax(-1)
    chunk = max(1, HEAD_CHUNK_BYTES // (4 * weight.shape[0]))
    return _TokenLogprobs.apply(hidden, weight.detach(), rows, targets, softcap, chunk)


def _unique_rows(source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted distinct hidden rows and, per label, the index of its row among them."""
    return torch.unique(source, return_inverse=True)


def label_logprobs(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probability of every labelled token, summed per sequence.

    Returns (per-sequence sum [n], per-sequence count [n], greedy-correct per sequence [n] as bool:
    every labelled token is the argmax, i.e. greedy decoding reproduces it). A sequence is a row
    of a `collate` batch, an example of a `pack` batch, a completion of a `group_batch` batch.
    """
    total, count, exact, _ = _sequence_logprobs(model, batch, _hidden(model, batch))
    return total, count, exact


def _sequence_logprobs(model, batch, hidden):
    source, targets, owner, n = _label_index(batch)
    device = hidden.device
    unique, inverse = _unique_rows(source.to(device))
    flat = hidden.reshape(-1, hidden.shape[-1])
    logp, best = token_logprobs(model, flat[unique], inverse, targets.to(device))
    owner = owner.to(device)
    hit = best[inverse] == targets.to(device)
    total = torch.zeros(n, device=device, dtype=logp.dtype).index_add(0, owner, logp)
    count = torch.zeros(n, device=device).index_add(0, owner, torch.ones_like(logp))
    misses = torch.zeros(n, device=device).index_add(0, owner, (~hit).float())
    return total, count, misses == 0, (unique, best)


def lm_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over labelled tokens (the usual supervised fine-tuning loss)."""
    source, targets, _, _ = _label_index(batch)
    hidden = _hidden(model, batch)
    device = hidden.device
    unique, inverse = _unique_rows(source.to(device))
    logp, _ = token_logprobs(model, hidden.reshape(-1, hidden.shape[-1])[unique], inverse, targets.to(device))
    return -logp.mean()


# --- prefix-shared scoring and greedy generation -------------------------------------------------


@torch.inference_mode()
def score_groups(
    model, batch: dict[str, torch.Tensor], max_new_tokens: int = 0, stop_ids: tuple[int, ...] = ()
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[list[int]]]:
    """Score every completion of a `group_batch` batch and, with `max_new_tokens`, continue each
    prompt greedily from the same keys and values until a stop token (kept in the output) or the
    limit. A row leaves the batch as soon as it stops.

    Returns (summed log-probability per completion, token count, greedy-exact, generated token ids
    per group)."""
    body, head, softcap = _body_and_head(model)
    device = head.weight.device
    rows = batch["input_ids"].shape[0]
    if max_new_tokens < 1:
        hidden = _hidden(model, batch)
        total, count, exact, _ = _sequence_logprobs(model, batch, hidden)
        return total, count, exact, [[] for _ in range(rows)]
    from transformers import DynamicCache

    cache = DynamicCache()  # no config: every layer keeps all keys; the masks below apply the windows
    hidden = _hidden(model, batch, cache)
    width = hidden.shape[1]
    ends = batch["prompt_ends"].to(device)
    last = torch.arange(rows, device=device) * width + ends
    if len(batch["label_source"]):
        total, count, exact, (unique, best) = _sequence_logprobs(model, batch, hidden)
        where = torch.searchsorted(unique, last).clamp(max=len(unique) - 1)
        scored = unique[where] == last  # the prompt's last position was projected for a completion
    else:
        total = count = exact = torch.zeros(0, device=device)
        where, scored, best = torch.zeros_like(last), torch.zeros_like(last, dtype=torch.bool), torch.zeros_like(last)
    first = best[where]
    if not scored.all():
        first[~scored] = _greedy(hidden.reshape(-1, hidden.shape[-1])[last[~scored]], head, softcap)
    generated = [[int(t)] for t in first]
    stops = torch.tensor(sorted(stop_ids), dtype=torch.long, device=device)
    seen = (batch["segment_ids"] == 0).to(device)  # generation reads the prompt, not the completions
    positions = batch["position_ids"].to(device)
    active = torch.arange(rows, device=device)
    token = first
    for step in range(1, max_new_tokens):
        keep = ~torch.isin(token, stops)
        if not keep.any():
            break
        if not keep.all():
            cache.batch_select_indices(keep.nonzero()[:, 0])
            active, token, seen, positions = active[keep], token[keep], seen[keep], positions[keep]
        new_position = ends[active] + step
        seen = torch.cat([seen, torch.ones_like(seen[:, :1])], 1)
        positions = torch.cat([positions, new_position[:, None]], 1)
        masks = {"full_attention": seen}
        window = getattr(body.config, "sliding_window", None)
        if window is not None:
            masks["sliding_attention"] = seen & (new_position[:, None] - positions < window)
        masks = {k: _as_attention_mask(body.config, m[:, None, None, :], head.weight.dtype) for k, m in masks.items()}
        out = body(
            input_ids=token[:, None],
            position_ids=new_position[:, None],
            attention_mask=_mask_argument(body.config, masks),
            use_cache=True,
            **{_cache_argument(body): cache},
        ).last_hidden_state
        token = _greedy(out[:, 0], head, softcap)
        for row, t in zip(active.tolist(), token.tolist()):
            generated[row].append(t)
    return total, count, exact, generated


def _greedy(hidden: torch.Tensor, head, softcap) -> torch.Tensor:
    logits = head(hidden)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits.float().argmax(-1)
