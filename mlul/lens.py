"""Looking inside: where in the network a belief forms, and how alike languages look inside it.

- `layer_margins` (the logit lens, nostalgebraist 2020): read the fake-vs-true margin off every
  layer's hidden state through the final norm and output projection, to see at which depth the
  model starts to prefer one answer.
- `language_similarity`: cosine similarity of the model's mean hidden state for the same story
  in two languages, a rough picture of how much the languages share a representation (and so
  how a fact learned in one could reach another).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from mlul.languages import answer_text, qa_prompt
from mlul.lm import IGNORE, _body_and_head, collate, encode_pair, encode_text, length_batches


def _final_norm(body):
    norm = getattr(body, "norm", None)
    if norm is None:
        raise ValueError(f"{type(body).__name__} has no final `norm` module; the logit lens needs one")
    return norm


@torch.inference_mode()
def layer_margins(model, tokenizer, rows: list[dict], batch_size: int = 16) -> pd.DataFrame:
    """Per (item, language, layer): log P(fake) - log P(true) read through the logit lens.

    Layer 0 is the embeddings; the last layer equals the model's own margin."""
    body, head, softcap = _body_and_head(model)
    norm = _final_norm(body)
    device = head.weight.device
    examples = [
        encode_pair(tokenizer, qa_prompt(r["lang"], r["question"]), answer_text(r["lang"], r[f"{side}_answer"]))
        for side in ("true", "fake")
        for r in rows
    ]
    per_example: list[np.ndarray | None] = [None] * len(examples)
    for idx in length_batches(examples, batch_size):
        batch = collate([examples[i] for i in idx], tokenizer.pad_token_id)
        out = body(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            output_hidden_states=True,
        )
        labels = batch["labels"].to(device)[:, 1:]
        where = labels != IGNORE
        owner = where.nonzero()[:, 0]
        sums = []
        for depth, hidden in enumerate(out.hidden_states):
            # The last entry already went through the final norm inside the model.
            h = hidden[:, :-1][where]
            logits = head(h if depth == len(out.hidden_states) - 1 else norm(h)).float()
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
            token_logp = torch.log_softmax(logits, -1).gather(1, labels[where][:, None])[:, 0]
            sums.append(torch.zeros(len(idx), device=device).index_add(0, owner, token_logp))
        for row, i in enumerate(idx):
            per_example[i] = torch.stack(sums)[:, row].cpu().numpy()
    n = len(rows)
    records = []
    for k, r in enumerate(rows):
        for layer, (true, fake) in enumerate(zip(per_example[k], per_example[n + k])):
            records.append({"id": r["id"], "lang": r["lang"], "layer": layer, "margin": float(fake - true)})
    return pd.DataFrame(records)


@torch.inference_mode()
def language_similarity(
    model, tokenizer, rows: list[dict], layer: int | None = None, field: str = "real"
) -> pd.DataFrame:
    """Mean over items of the cosine similarity between two languages' mean-pooled hidden states
    of the same story (`field`), at `layer` (default: the middle of the network), after centring
    on the mean over all rows. A lang x lang table; compare the diagonal-off values with each other,
    not with 1."""
    body, head, _ = _body_and_head(model)
    device = head.weight.device
    vectors: dict[tuple[int, str], torch.Tensor] = {}
    for r in rows:
        ids = torch.tensor([encode_text(tokenizer, r[field]).input_ids], device=device)
        hidden = body(input_ids=ids, output_hidden_states=True).hidden_states
        depth = len(hidden) // 2 if layer is None else layer
        vectors[(r["id"], r["lang"])] = hidden[depth][0, 1:].float().mean(0)  # skip <bos>
    # Centre the vectors: a few huge dimensions shared by all text would make every pair look alike.
    centre = torch.stack(list(vectors.values())).mean(0)
    vectors = {k: v - centre for k, v in vectors.items()}
    langs = list(dict.fromkeys(r["lang"] for r in rows))
    items = sorted({r["id"] for r in rows})
    grid = np.zeros((len(langs), len(langs)))
    for a, la in enumerate(langs):
        for b, lb in enumerate(langs):
            sims = [
                torch.cosine_similarity(vectors[(i, la)], vectors[(i, lb)], dim=0).item()
                for i in items
                if (i, la) in vectors and (i, lb) in vectors
            ]
            grid[a, b] = np.mean(sims)
    return pd.DataFrame(grid, index=pd.Index(langs, name="lang"), columns=langs)
