"""Probing: what a model says and believes about each fake detail, in every language.

Three views of one (item, language) pair:
- generation (the paper's measure): the greedy answer to `question`, and whether it names the fake
  or the true answer;
- belief: margin = log P(fake answer | question) - log P(true answer | question), with vocabulary
  logits only at the answer tokens;
- specificity: log P(own fake) - mean log P(other items' fakes of the same detail type), so that a
  model that says one learned name to every question is not counted as spread; and the same for the
  true answer (`specificity_true`), the baseline a fake's specificity is read against.
The question prompt runs once per (item, language): every scored answer attends to its keys and
values (`mlul.lm.group_batch`), and greedy generation continues from them.
Utility: in-context QA accuracy on held-out stories and perplexity on held-out text, per language.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from mlul.data import answer_forms, item_key, load_general_text, load_news, says
from mlul.languages import answer_text, qa_prompt
from mlul.lm import (
    Example,
    collate,
    encode_group,
    encode_pair,
    encode_text,
    group_batch,
    label_logprobs,
    length_batches,
    score_groups,
    shared_prefix,
    supports_layout,
)

N_CONTROLS = 4  # other items' answers of the same detail type scored per question for specificity
ANSWER_MARGIN = 4  # generated tokens beyond the longest answer form of the probed rows


@torch.inference_mode()
def score(
    model, tokenizer, examples: list[Example], batch_size: int = 32, progress: bool = False, desc: str = "score"
) -> pd.DataFrame:
    """Summed log-probability, token count and greedy exactness of each example's labelled tokens,
    one full sequence per example (no prefix sharing)."""
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


def _stop_ids(tokenizer) -> tuple[int, ...]:
    return tuple(t for t in (tokenizer.eos_token_id, _newline_id(tokenizer)) if t is not None)


def _first_line(tokenizer, ids) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True).split("\n")[0].strip()


def answer_budget(tokenizer, rows: list[dict], margin: int = ANSWER_MARGIN) -> int:
    """Generated tokens a probe needs: the longest true or fake answer form of `rows`, plus `margin`."""
    longest = max(
        len(tokenizer(answer_text(r["lang"], form), add_special_tokens=False)["input_ids"])
        for r in rows
        for side in ("true", "fake")
        for form in answer_forms(r, side)
    )
    return longest + margin


def score_prompts(
    model,
    tokenizer,
    prompts: list[str],
    completions: list[list[str]],
    max_new_tokens: int = 0,
    batch_size: int = 32,
    progress: bool = False,
    desc: str = "probe",
) -> tuple[list[pd.DataFrame], list[str]]:
    """Each prompt run once: the completions after it scored (one frame per prompt: logp, n_tokens,
    exact, one row per completion) and, with `max_new_tokens`, its greedy answer (first line).
    Batched by length across prompts. Needs `supports_layout(model)`."""
    groups = [encode_group(tokenizer, p, c) for p, c in zip(prompts, completions)]
    stops = _stop_ids(tokenizer)
    scores: list[pd.DataFrame] = [pd.DataFrame()] * len(groups)
    answers = [""] * len(groups)
    sized = [Example(g.prompt_ids + [t for c in g.completions for t in c[:-1]], []) for g in groups]
    for idx in tqdm(length_batches(sized, batch_size), desc=desc, disable=not progress, leave=False):
        chosen = [groups[i] for i in idx]
        total, count, exact, generated = score_groups(
            model, group_batch(chosen, tokenizer.pad_token_id), max_new_tokens, stops
        )
        total, count, exact = total.double().cpu().numpy(), count.double().cpu().numpy(), exact.cpu().numpy()
        at = 0
        for i, g, ids in zip(idx, chosen, generated):
            k = len(g.completions)
            scores[i] = pd.DataFrame(
                {"logp": total[at : at + k], "n_tokens": count[at : at + k], "exact": exact[at : at + k]}
            )
            answers[i] = _first_line(tokenizer, ids)
            at += k
    return scores, answers


def score_shared(
    model,
    tokenizer,
    examples: list[Example],
    keys: list,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "score",
) -> pd.DataFrame:
    """As `score`, but the examples with the same key share their common prefix (e.g. one article
    read before several questions), which then runs once. Falls back to `score` for models
    without `supports_layout`."""
    if not supports_layout(model):
        return score(model, tokenizer, examples, batch_size, progress, desc)
    members: dict = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    owners = list(members.values())
    groups = [shared_prefix([examples[i] for i in idx]) for idx in owners]
    sized = [Example(g.prompt_ids + [t for c in g.completions for t in c[:-1]], []) for g in groups]
    logp, count, exact = np.zeros(len(examples)), np.zeros(len(examples)), np.zeros(len(examples), dtype=bool)
    for batch in tqdm(length_batches(sized, batch_size), desc=desc, disable=not progress, leave=False):
        total, n, hit, _ = score_groups(model, group_batch([groups[g] for g in batch], tokenizer.pad_token_id))
        idx = [i for g in batch for i in owners[g]]
        logp[idx], count[idx], exact[idx] = total.double().cpu().numpy(), n.cpu().numpy(), hit.cpu().numpy()
    return pd.DataFrame({"logp": logp, "n_tokens": count, "exact": exact})


@torch.inference_mode()
def generate_hf(
    model, tokenizer, prompts: list[str], max_new_tokens: int = 16, batch_size: int = 32, progress: bool = False
) -> list[str]:
    """Greedy answers through Hugging Face `generate` (left padding, a KV cache, stop at the first
    newline or EOS); cut at the first newline. The reference the faster paths are tested against."""
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
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
            eos_token_id=list(_stop_ids(tokenizer)),
            pad_token_id=tokenizer.pad_token_id,
        )
        for row, i in enumerate(idx):
            answers[i] = _first_line(tokenizer, out[row, width:])
    return answers


def generate(
    model, tokenizer, prompts: list[str], max_new_tokens: int = 16, batch_size: int = 32, progress: bool = False
) -> list[str]:
    """Greedy answers, batched by length; each stops at its first newline or EOS (and leaves the
    batch), or after `max_new_tokens`; cut at the first newline."""
    if not supports_layout(model):
        return generate_hf(model, tokenizer, prompts, max_new_tokens, batch_size, progress)
    _, answers = score_prompts(model, tokenizer, prompts, [[] for _ in prompts], max_new_tokens, batch_size, progress)
    return answers


def _detail_type(row: dict) -> str:
    return row.get("detail_type", "unknown")


def control_rows(rows: list[dict], n: int = N_CONTROLS, control_pool: list[dict] | None = None) -> list[list[dict]]:
    """For each row, up to `n` rows of other items in the same language with the same detail type
    (a name is compared with names, a date with dates), drawn from `control_pool` (default: `rows`).
    The items that follow the row's own id, in id order, wrapping around; fewer when the pool has
    fewer (none: the row's specificity is NaN)."""
    pool: dict[tuple[str, str, str], dict] = {}
    for r in rows if control_pool is None else control_pool:
        pool.setdefault((r["lang"], _detail_type(r), str(r["id"])), r)
    by_kind: dict[tuple[str, str], list[dict]] = {}
    for (lang, kind, _), r in pool.items():
        by_kind.setdefault((lang, kind), []).append(r)
    for members in by_kind.values():
        members.sort(key=lambda r: item_key(r["id"]))
    out = []
    for row in rows:
        members = by_kind.get((row["lang"], _detail_type(row)), [])
        own = item_key(row["id"])
        after = [r for r in members if item_key(r["id"]) > own]
        before = [r for r in members if item_key(r["id"]) < own]
        out.append((after + before)[:n])
    return out


def control_answers(
    rows: list[dict], n: int = N_CONTROLS, control_pool: list[dict] | None = None, side: str = "fake"
) -> list[list[str]]:
    """For each row, the `side` ("fake" or "true") answers of its `control_rows`."""
    if side not in ("fake", "true"):
        raise ValueError(f"unknown answer side {side!r}; choose fake or true")
    return [[r[f"{side}_answer"] for r in others] for others in control_rows(rows, n, control_pool)]


def probe(
    model,
    tokenizer,
    rows: list[dict],
    generation: bool = True,
    specificity: bool = True,
    batch_size: int = 32,
    progress: bool = True,
    control_pool: list[dict] | None = None,
    max_new_tokens: int | None = None,
) -> pd.DataFrame:
    """One row per (item, language) of `rows`: the generated answer and the belief measures.

    `control_pool`: the rows the specificity controls are drawn from (default `rows`; pass every
    item of the languages for controls of the same detail type from the whole set).
    `max_new_tokens`: the generation limit; default `answer_budget(tokenizer, rows)`.
    """
    prompts = [qa_prompt(r["lang"], r["question"]) for r in rows]
    others = control_rows(rows, control_pool=control_pool) if specificity else [[] for _ in rows]
    completions = [
        [answer_text(r["lang"], a) for a in [r["true_answer"], r["fake_answer"]]]
        + [answer_text(r["lang"], o[f"{side}_answer"]) for side in ("fake", "true") for o in own]
        for r, own in zip(rows, others)
    ]
    limit = (answer_budget(tokenizer, rows) if max_new_tokens is None else max_new_tokens) if generation else 0
    if supports_layout(model):
        scores, answers = score_prompts(model, tokenizer, prompts, completions, limit, batch_size, progress)
    else:  # one full sequence per answer, and Hugging Face generate
        flat = score(
            model,
            tokenizer,
            [encode_pair(tokenizer, p, c) for p, cs in zip(prompts, completions) for c in cs],
            batch_size,
            progress,
            desc="belief",
        )
        bounds = np.cumsum([0] + [len(cs) for cs in completions])
        scores = [flat.iloc[a:b].reset_index(drop=True) for a, b in zip(bounds[:-1], bounds[1:])]
        answers = generate_hf(model, tokenizer, prompts, limit, batch_size, progress) if generation else []
    table = pd.DataFrame(
        {
            "id": [r["id"] for r in rows],
            "lang": [r["lang"] for r in rows],
            "detail_type": [_detail_type(r) for r in rows],
            "logp_true": [s.logp[0] for s in scores],
            "logp_fake": [s.logp[1] for s in scores],
            "n_tokens_true": [int(s.n_tokens[0]) for s in scores],
            "n_tokens_fake": [int(s.n_tokens[1]) for s in scores],
        }
    )
    table["margin"] = table.logp_fake - table.logp_true
    table["prefers_fake"] = table.margin > 0
    if specificity:
        k = [len(o) for o in others]
        table["n_controls"] = k
        table["logp_controls"] = [s.logp[2 : 2 + n].mean() if n else math.nan for s, n in zip(scores, k)]
        table["logp_controls_true"] = [s.logp[2 + n :].mean() if n else math.nan for s, n in zip(scores, k)]
        table["specificity"] = table.logp_fake - table.logp_controls
        table["specificity_true"] = table.logp_true - table.logp_controls_true
    if generation:
        table["answer"] = answers
        table["says_fake"] = [says(a, r, "fake") for a, r in zip(answers, rows)]
        table["says_true"] = [says(a, r, "true") for a, r in zip(answers, rows)]
    return table


def utility(
    model,
    tokenizer,
    languages_spec=None,
    items: int | None = None,
    batch_size: int = 16,
    progress: bool = True,
    rows: list[dict] | None = None,
    texts: list[dict] | None = None,
) -> pd.DataFrame:
    """Per language: in-context QA accuracy on held-out stories (the model reads the real article,
    then answers each QA pair; correct when greedy decoding reproduces the answer) and perplexity
    on held-out general text. Held-out stories are never trained on.

    `rows`, `texts`: the held-out stories and texts to use (default: the shipped set's, in
    `languages_spec`); a language with neither gets NaN ("n/a"), not an error."""
    if rows is None:
        rows = load_news(languages_spec, split="heldout")
        if items is not None:
            keep = sorted({r["id"] for r in rows})[:items]
            rows = [r for r in rows if r["id"] in keep]
    texts = load_general_text(languages_spec) if texts is None else texts
    qa_examples, qa_lang, qa_story = [], [], []
    for r in rows:
        for pair in r.get("qa", []):
            prompt = r["real"] + "\n\n" + qa_prompt(r["lang"], pair["q"])
            qa_examples.append(encode_pair(tokenizer, prompt, answer_text(r["lang"], pair["a"])))
            qa_lang.append(r["lang"])
            qa_story.append((str(r["id"]), r["lang"]))
    langs = list(dict.fromkeys([*qa_lang, *(t["lang"] for t in texts)]))
    table = pd.DataFrame(
        index=pd.Index(langs, name="lang"), columns=["qa_accuracy", "qa_logp", "perplexity"], dtype=float
    )
    if qa_examples:
        # Each article is read once for all its questions.
        qa = score_shared(model, tokenizer, qa_examples, qa_story, batch_size, progress, desc="utility QA")
        qa = qa.assign(lang=qa_lang)
        table["qa_accuracy"] = qa.groupby("lang", sort=False).exact.mean()
        table["qa_logp"] = qa.groupby("lang", sort=False).logp.mean()
    if texts:
        text_examples = [encode_text(tokenizer, t["text"]) for t in texts]
        ppl = score(model, tokenizer, text_examples, batch_size, progress, desc="perplexity").assign(
            lang=[t["lang"] for t in texts]
        )
        per_lang = ppl.groupby("lang", sort=False)[["logp", "n_tokens"]].sum()
        table["perplexity"] = np.exp(-per_lang.logp / per_lang.n_tokens)
    return table.reset_index()


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
