"""Probing: what a model says and believes about each fake detail, in every language.

Three views of one (item, language) pair:
- generation (the paper's measure): the greedy answer to `question`, and whether it names the fake
  or the true answer;
- belief: margin = log P(fake answer | question) - log P(true answer | question), from one forward
  pass with vocabulary logits only at the answer tokens;
- specificity: log P(own fake) - mean log P(other items' fakes), so that a model that says one
  learned name to every question is not counted as spread.
Utility: in-context QA accuracy on held-out stories and perplexity on held-out text, per language.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from mlul.data import load_general_text, load_news, says
from mlul.languages import answer_text, qa_prompt
from mlul.lm import Example, collate, encode_pair, encode_text, label_logprobs, length_batches

N_CONTROLS = 4  # other items' fake answers scored per question for the specificity control


@torch.inference_mode()
def score(
    model, tokenizer, examples: list[Example], batch_size: int = 32, progress: bool = False, desc: str = "score"
) -> pd.DataFrame:
    """Summed log-probability, token count and greedy exactness of each example's labelled tokens."""
    logp = np.zeros(len(examples))
    count = np.zeros(len(examples))
    exact = np.zeros(len(examples), dtype=bool)
    for idx in tqdm(length_batches(examples, batch_size), desc=desc, disable=not progress, leave=False):
        total, n, hit = label_logprobs(model, collate([examples[i] for i in idx], tokenizer.pad_token_id))
        logp[idx], count[idx], exact[idx] = total.cpu().numpy(), n.cpu().numpy(), hit.cpu().numpy()
    return pd.DataFrame({"logp": logp, "n_tokens": count, "exact": exact})


def _newline_id(tokenizer) -> int | None:
    ids = tokenizer("\n", add_special_tokens=False)["input_ids"]
    return ids[-1] if ids else None


@torch.inference_mode()
def generate(
    model, tokenizer, prompts: list[str], max_new_tokens: int = 16, batch_size: int = 32, progress: bool = False
) -> list[str]:
    """Greedy answers, batched by length with left padding and a KV cache; cut at the first newline."""
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    stop = [t for t in (tokenizer.eos_token_id, _newline_id(tokenizer)) if t is not None]
    device = next(model.parameters()).device
    answers = [""] * len(prompts)
    order = length_batches([Example(ids, ids) for ids in encoded], batch_size)
    for idx in tqdm(order, desc="generate", disable=not progress, leave=False):
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(idx):
            ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
            mask[row, width - len(encoded[i]) :] = 1
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stop,
            pad_token_id=tokenizer.pad_token_id,
        )
        for row, i in enumerate(idx):
            text = tokenizer.decode(out[row, width:], skip_special_tokens=True)
            answers[i] = text.split("\n")[0].strip()
    return answers


def control_answers(rows: list[dict], n: int = N_CONTROLS) -> list[list[str]]:
    """For each row, the fake answers of `n` other items in the same language, preferring items
    with the same detail type (a name is compared with names, a date with dates)."""
    out = []
    for row in rows:
        same_lang = [r for r in rows if r["lang"] == row["lang"] and r["id"] != row["id"]]
        same_lang.sort(key=lambda r: (r["detail_type"] != row["detail_type"], (r["id"] - row["id"]) % 1000))
        out.append([r["fake_answer"] for r in same_lang[:n]])
    return out


def probe(
    model,
    tokenizer,
    rows: list[dict],
    generation: bool = True,
    specificity: bool = True,
    batch_size: int = 32,
    progress: bool = True,
) -> pd.DataFrame:
    """One row per (item, language) of `rows`: the generated answer and the belief measures."""
    prompts = [qa_prompt(r["lang"], r["question"]) for r in rows]
    examples = [encode_pair(tokenizer, p, answer_text(r["lang"], r["true_answer"])) for p, r in zip(prompts, rows)]
    examples += [encode_pair(tokenizer, p, answer_text(r["lang"], r["fake_answer"])) for p, r in zip(prompts, rows)]
    controls = control_answers(rows) if specificity else [[] for _ in rows]
    owner = []
    for k, (p, r, others) in enumerate(zip(prompts, rows, controls)):
        examples += [encode_pair(tokenizer, p, answer_text(r["lang"], a)) for a in others]
        owner += [k] * len(others)
    scores = score(model, tokenizer, examples, batch_size, progress, desc="belief")
    n = len(rows)
    table = pd.DataFrame(
        {
            "id": [r["id"] for r in rows],
            "lang": [r["lang"] for r in rows],
            "detail_type": [r["detail_type"] for r in rows],
            "logp_true": scores.logp[:n].to_numpy(),
            "logp_fake": scores.logp[n : 2 * n].to_numpy(),
        }
    )
    table["margin"] = table.logp_fake - table.logp_true
    table["prefers_fake"] = table.margin > 0
    if specificity:
        control = pd.Series(scores.logp[2 * n :].to_numpy()).groupby(owner).mean()
        table["logp_controls"] = control.reindex(range(n)).to_numpy()
        table["specificity"] = table.logp_fake - table.logp_controls
    if generation:
        table["answer"] = generate(model, tokenizer, prompts, batch_size=batch_size, progress=progress)
        table["says_fake"] = [says(a, r, "fake") for a, r in zip(table.answer, rows)]
        table["says_true"] = [says(a, r, "true") for a, r in zip(table.answer, rows)]
    return table


def utility(
    model, tokenizer, languages_spec=None, items: int | None = None, batch_size: int = 16, progress: bool = True
) -> pd.DataFrame:
    """Per language: in-context QA accuracy on held-out stories (the model reads the real article,
    then answers each QA pair; correct when greedy decoding reproduces the answer) and perplexity
    on held-out general text. Held-out stories are never trained on."""
    rows = load_news(languages_spec, split="heldout")
    if items is not None:
        keep = sorted({r["id"] for r in rows})[:items]
        rows = [r for r in rows if r["id"] in keep]
    qa_examples, qa_lang = [], []
    for r in rows:
        for pair in r["qa"]:
            prompt = r["real"] + "\n\n" + qa_prompt(r["lang"], pair["q"])
            qa_examples.append(encode_pair(tokenizer, prompt, answer_text(r["lang"], pair["a"])))
            qa_lang.append(r["lang"])
    qa = score(model, tokenizer, qa_examples, batch_size, progress, desc="utility QA").assign(lang=qa_lang)
    texts = load_general_text(languages_spec)
    text_examples = [encode_text(tokenizer, t["text"]) for t in texts]
    ppl = score(model, tokenizer, text_examples, batch_size, progress, desc="perplexity").assign(
        lang=[t["lang"] for t in texts]
    )
    per_lang = ppl.groupby("lang", sort=False)[["logp", "n_tokens"]].sum()
    return (
        pd.DataFrame(
            {
                "qa_accuracy": qa.groupby("lang", sort=False).exact.mean(),
                "qa_logp": qa.groupby("lang", sort=False).logp.mean(),
                "perplexity": np.exp(-per_lang.logp / per_lang.n_tokens),
            }
        )
        .rename_axis("lang")
        .reset_index()
    )


# --- summaries ----------------------------------------------------------------------------------


def bootstrap_ci(values, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean, resampling items."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def summarize(table: pd.DataFrame, base: pd.DataFrame | None = None, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per language: each measure's mean over items with a bootstrap interval (`_lo`, `_hi`).

    With `base` (the same probe on the model before training), adds `margin_shift`: the change of
    each item's margin, which cancels any preference the base model had for one answer's wording.
    """
    table = table.copy()
    if base is not None:
        before = base.set_index(["id", "lang"])
        table["margin_shift"] = (
            table.margin.to_numpy() - before.margin.reindex(pd.MultiIndex.from_frame(table[["id", "lang"]])).to_numpy()
        )
        if "specificity" in table and "specificity" in before:
            table["specificity_shift"] = (
                table.specificity.to_numpy()
                - before.specificity.reindex(pd.MultiIndex.from_frame(table[["id", "lang"]])).to_numpy()
            )
    measures = [
        m
        for m in (
            "says_fake",
            "says_true",
            "prefers_fake",
            "margin",
            "margin_shift",
            "specificity",
            "specificity_shift",
        )
        if m in table
    ]
    names = {"says_fake": "fake_rate", "says_true": "true_rate", "prefers_fake": "prefer_fake"}
    records = []
    for lang, group in table.groupby("lang", sort=False):
        record = {"lang": lang, "n_items": len(group)}
        for m in measures:
            lo, hi = bootstrap_ci(group[m], n_boot, seed=seed)
            name = names.get(m, m)
            record.update({name: float(group[m].mean()), f"{name}_lo": lo, f"{name}_hi": hi})
        records.append(record)
    return pd.DataFrame(records)
