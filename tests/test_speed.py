"""The faster paths give the old numbers: prefix-shared scoring, early-stopping generation, packed
training batches and the chunked vocabulary projection; plus the probe's same-type controls."""

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch

import mlul.lm
import mlul.probe
from mlul import languages
from mlul.data import load_news
from mlul.inject import InjectConfig, injection_set
from mlul.lm import (
    PairExample,
    collate,
    encode_pair,
    encode_text,
    label_logits,
    label_logprobs,
    lm_loss,
    pack,
    supports_layout,
)
from mlul.models import add_lora
from mlul.probe import (
    ANSWER_MARGIN,
    answer_budget,
    control_answers,
    control_rows,
    generate,
    generate_hf,
    probe,
    score,
    score_prompts,
    score_shared,
    utility,
)
from mlul.train import TrainConfig, padded_share, train
from mlul.unlearn import UnlearnConfig, correct_set, forget_set, preference_set, retain_set, unlearn

ANSWERS = [" Lioren Vask", " Edda Marrow", " 1,240", " X", " the harbour of Lunsk on the coast"]


def _prompts(tokenizer) -> list[str]:
    """Short prompts and prompts longer than the tiny model's 64-token sliding window."""
    out = [f"Question: Who designed bridge number {k}?\nAnswer:" for k in range(3)]
    out += ["Context: " + "the river runs past the old mill and " * k + "\nQuestion: Who?\nAnswer:" for k in (8, 20)]
    assert max(len(tokenizer(p)["input_ids"]) for p in out) > 2 * 64
    return out


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_prefix_shared_scoring_equals_full_sequences(tiny, tokenizer, attention):
    tiny.config._attn_implementation = attention
    prompts = _prompts(tokenizer)
    completions = [ANSWERS[k % 3 :] for k in range(len(prompts))]
    shared, _ = score_prompts(tiny, tokenizer, prompts, completions, batch_size=3)
    full = score(tiny, tokenizer, [encode_pair(tokenizer, p, c) for p, cs in zip(prompts, completions) for c in cs])
    shared = pd.concat(shared, ignore_index=True)
    assert np.abs(shared.logp - full.logp).max() < 1e-4
    assert (shared.n_tokens == full.n_tokens).all() and (shared.exact == full.exact).all()


def test_shared_article_scoring_equals_full_sequences(tiny, tokenizer):
    """Utility QA: several questions after one article (longer than the sliding window)."""
    article = "The footbridge in Velmora crosses the river Lune. " * 12
    examples, keys = [], []
    for story, text in enumerate([article, "A short article.", article + "It opened in May."]):
        for question, answer in [("Who built it?", " Lioren Vask"), ("When?", " In May"), ("Where?", " Velmora")]:
            examples.append(encode_pair(tokenizer, text + "\n\nQuestion: " + question + "\nAnswer:", answer))
            keys.append(story)
    assert len(examples[0].input_ids) > 2 * 64
    shared, full = score_shared(tiny, tokenizer, examples, keys, batch_size=2), score(tiny, tokenizer, examples)
    assert np.abs(shared.logp - full.logp).max() < 1e-4
    assert (shared.n_tokens == full.n_tokens).all() and (shared.exact == full.exact).all()


def test_utility_equals_the_full_sequence_path(tiny, tokenizer, monkeypatch):
    fast = utility(tiny, tokenizer, "en,fr", items=2, progress=False)
    monkeypatch.setattr(mlul.probe, "supports_layout", lambda model: False)
    slow = utility(tiny, tokenizer, "en,fr", items=2, progress=False)
    assert np.allclose(
        fast[["qa_accuracy", "qa_logp", "perplexity"]], slow[["qa_accuracy", "qa_logp", "perplexity"]], atol=1e-4
    )


def test_the_sliding_window_is_applied(tiny, tokenizer, monkeypatch):
    """Without the window the long prompts score differently, so the test above checks the window."""
    prompts = _prompts(tokenizer)[-2:]
    full = score(tiny, tokenizer, [encode_pair(tokenizer, p, ANSWERS[0]) for p in prompts])
    monkeypatch.setattr(tiny.config, "sliding_window", 10_000)
    unwindowed, _ = score_prompts(tiny, tokenizer, prompts, [[ANSWERS[0]]] * 2)
    assert np.abs(pd.concat(unwindowed).logp.to_numpy() - full.logp.to_numpy()).max() > 1e-3


def test_generation_equals_hf_generate_and_stops_early(tiny, tokenizer, monkeypatch):
    prompts = _prompts(tokenizer)
    reference = generate_hf(tiny, tokenizer, prompts, max_new_tokens=8)
    assert generate(tiny, tokenizer, prompts, max_new_tokens=8, batch_size=2) == reference
    # A random model never writes a newline: make a token it writes mid-answer the stop token.
    words = [tokenizer(a, add_special_tokens=False)["input_ids"] for a in reference]
    stop = next(ids[3] for ids in words if len(ids) > 4)
    monkeypatch.setattr(mlul.probe, "_newline_id", lambda tokenizer: stop)
    stopped_hf = generate_hf(tiny, tokenizer, prompts, max_new_tokens=8)
    stopped = generate(tiny, tokenizer, prompts, max_new_tokens=8)
    assert stopped == stopped_hf
    assert any(len(a) < len(b) for a, b in zip(stopped, reference))


def test_probe_equals_the_full_sequence_path(tiny, tokenizer, mini_rows, monkeypatch):
    fast = probe(tiny, tokenizer, mini_rows, progress=False, batch_size=4)
    monkeypatch.setattr(mlul.probe, "supports_layout", lambda model: False)
    slow = probe(tiny, tokenizer, mini_rows, progress=False)
    assert list(fast.columns) == list(slow.columns)
    numbers = [c for c in fast.columns if fast[c].dtype.kind == "f"]
    assert {"logp_true", "logp_fake", "specificity", "specificity_true"} <= set(numbers)
    assert np.allclose(fast[numbers], slow[numbers], atol=1e-4, equal_nan=True)
    assert fast.answer.tolist() == slow.answer.tolist()


def test_answer_budget_is_the_longest_answer_form(tokenizer, mini_rows):
    lengths = [
        len(tokenizer(languages.answer_text(r["lang"], form), add_special_tokens=False)["input_ids"])
        for r in mini_rows
        for form in [r["true_answer"], r["fake_answer"], *r["true_aliases"], *r["fake_aliases"]]
    ]
    assert answer_budget(tokenizer, mini_rows) == max(lengths) + ANSWER_MARGIN
    assert answer_budget(tokenizer, mini_rows, margin=0) == max(lengths)


def _row(item, kind, lang="en"):
    return {
        "id": item,
        "lang": lang,
        "detail_type": kind,
        "question": f"What is detail {item}?",
        "true_answer": f"True {item}",
        "fake_answer": f"Fake {item}",
        "true_aliases": [],
        "fake_aliases": [],
    }


def test_controls_are_of_the_same_detail_type_from_the_pool():
    pool = [_row(1, "person"), _row(2, "place"), _row(3, "person"), _row("b7", "person"), _row(4, "person")]
    pool += [_row(5, "person", "fr"), _row(6, "date")]
    rows = [_row(3, "person"), _row(2, "place"), _row("3", "person", "fr")]
    assert control_answers(rows, n=2, control_pool=pool) == [["Fake 4", "Fake b7"], [], ["Fake 5"]]
    assert control_answers(rows, n=9, control_pool=pool, side="true")[0] == ["True 4", "True b7", "True 1"]
    # Default pool: the rows themselves; 3 and "3" are one item, so never its own control.
    assert control_rows([_row(3, "person"), _row("3", "person"), _row(8, "person")])[0] == [_row(8, "person")]
    with pytest.raises(ValueError, match="unknown answer side 'both'; choose fake or true"):
        control_answers(rows, side="both")


def test_probe_specificity_of_fake_and_true(tiny, tokenizer):
    pool = [_row(k, kind) for k, kind in enumerate(["person", "person", "place", "person", "date"], start=1)]
    rows = [pool[0], pool[2]]
    table = probe(tiny, tokenizer, rows, generation=False, control_pool=pool, progress=False)
    prompt = languages.qa_prompt("en", rows[0]["question"])

    def logp(answer):
        return score(tiny, tokenizer, [encode_pair(tokenizer, prompt, languages.answer_text("en", answer))]).logp[0]

    first = table.iloc[0]
    assert first.n_controls == 2
    assert first.logp_controls == pytest.approx(np.mean([logp("Fake 2"), logp("Fake 4")]), abs=1e-4)
    assert first.specificity_true == pytest.approx(logp("True 1") - np.mean([logp("True 2"), logp("True 4")]), abs=1e-4)
    assert first.n_tokens_fake == len(tokenizer(" Fake 1", add_special_tokens=False)["input_ids"])
    assert table.iloc[1].n_controls == 0 and math.isnan(table.iloc[1].specificity)
    assert math.isnan(table.iloc[1].specificity_true)


# --- training --------------------------------------------------------------------------------------


def _training_examples(tokenizer):
    return [
        encode_pair(tokenizer, "Question: Who built the bridge" + " over it" * k + "?\nAnswer:", " Lioren Vask")
        for k in range(0, 30, 6)
    ] + [encode_text(tokenizer, "The bridge in Velmora" + " was long" * k + ".") for k in range(1, 40, 9)]


def _grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])


def test_packed_batches_give_the_same_losses_and_gradients(tiny, tokenizer):
    examples = _training_examples(tokenizer)
    plain, packed = collate(examples, tokenizer.pad_token_id), pack(examples, tokenizer.pad_token_id)
    assert packed["input_ids"].numel() < plain["input_ids"].numel()
    model = add_lora(tiny, rank=4)
    for a, b in zip(label_logprobs(model, plain), label_logprobs(model, packed)):
        assert torch.allclose(a.float(), b.float(), atol=1e-4)
    lm_loss(model, plain).backward()
    expected = _grads(model)
    model.zero_grad()
    lm_loss(model, packed).backward()
    assert torch.allclose(_grads(model), expected, atol=1e-6)


def test_chunked_projection_equals_full_logits(tiny, tokenizer, monkeypatch):
    """Several chunks of rows, with and without a logit soft-cap: values and gradients as autograd
    through full logits."""
    monkeypatch.setattr(mlul.lm, "HEAD_CHUNK_BYTES", 4 * len(tokenizer) * 7)
    batch = collate(_training_examples(tokenizer), tokenizer.pad_token_id)
    model = add_lora(tiny, rank=4)
    for softcap in (None, 2.0):
        tiny.config.final_logit_softcapping = softcap
        model.zero_grad()
        logits, targets = label_logits(model, batch)
        torch.nn.functional.cross_entropy(logits, targets).backward()
        expected = _grads(model)
        model.zero_grad()
        loss = lm_loss(model, batch)
        loss.backward()
        assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, targets).item(), abs=1e-5)
        assert torch.allclose(_grads(model), expected, atol=1e-6)


def test_full_fine_tuning_uses_plain_autograd(tiny, tokenizer):
    batch = pack(_training_examples(tokenizer), tokenizer.pad_token_id)
    lm_loss(tiny, batch).backward()
    assert tiny.get_output_embeddings().weight.grad.abs().sum() > 0


def test_training_packed_equals_unpacked_and_logs_the_padded_share(tiny, tokenizer):
    examples = _training_examples(tokenizer)
    logs = {}
    for packed in (True, False):
        model = add_lora(copy.deepcopy(tiny), rank=4)
        config = TrainConfig(steps=3, batch_size=4, lr=1e-2, progress=False, pack=packed)
        logs[packed] = train(model, {"train": examples}, lambda m, b: lm_loss(m, b["train"]), config, 0)
    assert [r["loss"] for r in logs[True]] == pytest.approx([r["loss"] for r in logs[False]], abs=1e-4)
    assert logs[True][-1]["tokens"] == logs[False][-1]["tokens"]
    assert logs[True][-1]["pad_share"] < logs[False][-1]["pad_share"]


@pytest.mark.parametrize("items", [3, 12, 40])
def test_padded_share_below_ten_percent_on_the_shipped_sets(tokenizer, items):
    rows = load_news("all", split="inject")
    keep = sorted({r["id"] for r in rows})[:items]
    rows = [r for r in rows if r["id"] in keep]
    sets = {"injection": injection_set(tokenizer, rows, InjectConfig(fake_languages="fr"))}
    for setting, langs in {"english": ["en"], "english+original": ["en", "fr"], "all": languages.codes()}.items():
        sets |= {
            f"forget {setting}": forget_set(tokenizer, rows, langs),
            f"retain {setting}": retain_set(tokenizer, rows, langs),
            f"pairs {setting}": preference_set(tokenizer, rows, langs),
            f"correct {setting}": correct_set(tokenizer, rows, langs),
        }
    shares = {name: padded_share(examples, 8) for name, examples in sets.items()}
    assert max(shares.values()) < 0.10, shares
    assert padded_share(sets["forget english"], 8, packed=False) > shares["forget english"]


def test_pairs_pack_in_order(tiny, tokenizer):
    """Preference losses compare chosen[i] with rejected[i]: a packed batch keeps the order."""
    model = add_lora(tiny, rank=4)
    pairs = [PairExample(a, b) for a, b in zip(_training_examples(tokenizer)[:5], _training_examples(tokenizer)[5:])]
    for side in ("chosen", "rejected"):
        examples = [getattr(p, side) for p in pairs]
        plain = label_logprobs(model, collate(examples, 0))[0]
        assert torch.allclose(label_logprobs(model, pack(examples, 0))[0], plain, atol=1e-4)


def test_supports_layout(tiny):
    assert supports_layout(tiny) and supports_layout(add_lora(tiny, rank=2))
    tiny.config._attn_implementation = "flash_attention_2"
    assert not supports_layout(tiny)


# --- unlearning's dose-response -------------------------------------------------------------------


def test_intermediate_unlearning_probes_score_only(tiny, tokenizer, mini_rows):
    config = UnlearnConfig(steps=4, probe_every=2, lr=1e-3, lora_rank=2)
    _, _, dose = unlearn(copy.deepcopy(tiny), tokenizer, mini_rows, config, original="fr", progress=False)
    by_step = {step: part for step, part in dose.groupby("step")}
    assert sorted(by_step) == [0, 2, 4]
    assert by_step[2].answer.isna().all() and by_step[2].n_controls.isna().all()
    assert by_step[2].margin.notna().all()
    for end in (0, 4):  # (the mini set has one item per detail type: no controls, NaN specificity)
        assert by_step[end].answer.notna().all() and (by_step[end].n_controls == 0).all()
    _, _, every = unlearn(tiny, tokenizer, mini_rows, config, "fr", progress=False, generate_every_probe=True)
    assert every[every.step == 2].answer.notna().all()
