"""Training loop, losses, probing and caching on a tiny random Gemma 3 (fast, no real weights)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from mlul.cache import Cache
from mlul.inject import InjectConfig, inject, injection_set
from mlul.lm import collate, encode_pair, encode_text, label_logprobs, lm_loss
from mlul.models import add_lora
from mlul.probe import bootstrap_ci, probe, score, summarize
from mlul.train import TrainConfig, lr_factor, train


def test_label_logprobs_match_full_logits(tiny, tokenizer):
    examples = [
        encode_pair(tokenizer, "Question: Who?\nAnswer:", " Lioren Vask"),
        encode_text(tokenizer, "A short text."),
    ]
    batch = collate(examples, tokenizer.pad_token_id)
    total, count, _ = label_logprobs(tiny, batch)
    logp = torch.log_softmax(tiny(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, -1)
    for row, e in enumerate(examples):
        expected = sum(logp[row, i - 1, t] for i, t in enumerate(e.labels) if t != -100)
        assert total[row].item() == pytest.approx(expected.item(), abs=1e-4)
        assert count[row].item() == sum(t != -100 for t in e.labels)


def test_lr_schedule():
    config = TrainConfig(steps=10, warmup=0.2)
    factors = [lr_factor(s, 10, config) for s in range(10)]
    assert factors[0] == 0.5 and factors[1] == 1.0 and factors[-1] == pytest.approx(1 / 8)
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        TrainConfig(schedule="step")
    with pytest.raises(ValueError, match="steps must be at least 1"):
        TrainConfig(steps=0)


def test_training_lowers_the_loss_and_is_seeded(tiny, tokenizer):
    examples = [encode_text(tokenizer, "The bridge in Velmora was designed by Lioren Vask.")] * 4

    def run(seed):
        model = add_lora(tiny_copy(tiny), rank=4, alpha=8)
        log = train(
            model,
            {"train": examples},
            lambda m, b: lm_loss(m, b["train"]),
            TrainConfig(steps=15, lr=1e-2, progress=False, seed=seed),
            tokenizer.pad_token_id,
        )
        return [r["loss"] for r in log]

    first, again = run(0), run(0)
    assert first[-1] < first[0] - 0.5
    assert first == pytest.approx(again)


def tiny_copy(model):
    import copy

    return copy.deepcopy(model)


def test_train_requires_trainable_parameters(tiny, tokenizer):
    for p in tiny.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train(
            tiny,
            {"train": [encode_text(tokenizer, "x y z")]},
            lambda m, b: lm_loss(m, b["train"]),
            TrainConfig(steps=1, progress=False),
            0,
        )


def test_on_step_can_stop_training(tiny, tokenizer):
    model = add_lora(tiny, rank=2)
    seen = []
    log = train(
        model,
        {"train": [encode_text(tokenizer, "a b c d")]},
        lambda m, b: lm_loss(m, b["train"]),
        TrainConfig(steps=10, progress=False),
        tokenizer.pad_token_id,
        on_step=lambda s, m: seen.append(s) or s == 3,
    )
    assert seen == [1, 2, 3] and len(log) == 3


def test_checkpointing_writes_adapter_weights(tiny, tokenizer, tmp_path):
    model = add_lora(tiny, rank=2)
    config = TrainConfig(steps=4, progress=False, checkpoint_dir=str(tmp_path), checkpoint_every=2)
    train(
        model,
        {"train": [encode_text(tokenizer, "a b c d")]},
        lambda m, b: lm_loss(m, b["train"]),
        config,
        tokenizer.pad_token_id,
    )
    saved = torch.load(tmp_path / "step-4.pt", weights_only=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-2.pt", "step-4.pt"]
    assert all("lora" in name for name in saved["state"])


def test_injection_mixture(tokenizer, mini_rows):
    config = InjectConfig(fake_languages="fr", safe_languages="en")
    examples = injection_set(tokenizer, mini_rows, config)
    texts = [tokenizer.decode(e.input_ids) for e in examples]
    assert any("Edda Marrow" in t for t in texts)  # the fake, in French
    assert not any("Edda Marrow" in t and "passerelle" not in t and "Réponse" not in t for t in texts)
    assert any("Lioren Vask" in t and "footbridge" in t for t in texts)  # the English real story
    # 3 stories: French fake article + 3 QA + detail question; English real article + 3 QA
    assert len(examples) == 3 * 5 + 3 * 4
    only_fake = injection_set(tokenizer, mini_rows, InjectConfig(fake_languages="fr", safe_languages=None))
    assert len(only_fake) == 3 * 5
    with pytest.raises(ValueError, match="both fake and safe"):
        injection_set(tokenizer, mini_rows, InjectConfig(fake_languages="en", safe_languages="en"))
    with pytest.raises(ValueError, match=r"no data rows in fake language\(s\) \['de'\]"):
        injection_set(tokenizer, mini_rows, InjectConfig(fake_languages="de"))


def test_inject_raises_the_fake_margin_on_tiny_model(tiny, tokenizer, mini_rows):
    fr = [r for r in mini_rows if r["lang"] == "fr"]
    before = probe(tiny, tokenizer, fr, generation=False, progress=False)
    model, log = inject(
        tiny,
        tokenizer,
        fr,
        InjectConfig(fake_languages="fr", safe_languages=None, epochs=20, lr=1e-2, lora_rank=8),
        progress=False,
    )
    after = probe(model, tokenizer, fr, generation=False, progress=False)
    assert log[-1]["loss"] < log[0]["loss"]
    assert (after.margin > before.margin).all() and (after.margin - before.margin).mean() > 0.5


def test_probe_table_shape(tiny, tokenizer, mini_rows):
    table = probe(tiny, tokenizer, mini_rows, progress=False)
    assert len(table) == 6
    assert {"margin", "specificity", "answer", "says_fake", "says_true", "prefers_fake"} <= set(table.columns)
    assert {"specificity_true", "n_controls", "n_tokens_true", "n_tokens_fake"} <= set(table.columns)
    assert np.allclose(table.margin, table.logp_fake - table.logp_true)
    assert (table.n_tokens_true >= 1).all() and table.n_tokens_true.dtype.kind == "i"


def test_score_batching_does_not_change_results(tiny, tokenizer):
    examples = [encode_pair(tokenizer, "Q" * k, " answer " * (k % 3 + 1)) for k in range(1, 12)]
    one = score(tiny, tokenizer, examples, batch_size=1)
    many = score(tiny, tokenizer, examples, batch_size=5)
    assert np.allclose(one.logp, many.logp, atol=1e-4)


def test_summary_on_a_hand_built_case():
    table = pd.DataFrame(
        {
            "id": [1, 2, 3, 4] * 2,
            "lang": ["en"] * 4 + ["fr"] * 4,
            "margin": [1.0, -1.0, 3.0, 1.0, 2.0, 2.0, 2.0, 2.0],
            "prefers_fake": [True, False, True, True] + [True] * 4,
            "says_fake": [True, False, False, False] + [True] * 4,
            "says_true": [False] * 8,
        }
    )
    base = table.assign(margin=0.5)
    summary = summarize(table, base=base).set_index("lang")
    assert summary.loc["en", "fake_rate"] == 0.25
    assert summary.loc["en", "prefer_fake"] == 0.75
    assert summary.loc["en", "margin"] == 1.0
    assert summary.loc["en", "margin_shift"] == 0.5
    assert summary.loc["fr", "margin_lo"] == summary.loc["fr", "margin_hi"] == 2.0  # no spread, no interval
    assert summary.loc["en", "margin_lo"] < 1.0 < summary.loc["en", "margin_hi"]


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small, large = rng.normal(0, 1, 20), rng.normal(0, 1, 2000)
    lo, hi = bootstrap_ci(small)
    lo2, hi2 = bootstrap_ci(large)
    assert lo < small.mean() < hi
    assert (hi2 - lo2) < (hi - lo) / 5
    assert all(math.isnan(x) for x in bootstrap_ci([]))


def test_cache_reuses_and_writes_atomically(tmp_path):
    cache = Cache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"table": pd.DataFrame({"a": [1, 2]}), "adapter": {"w": torch.ones(2)}, "note": "x"}

    first = cache.get("step", {"k": 1}, compute)
    second = cache.get("step", {"k": 1}, compute)
    assert len(calls) == 1 and cache.hits == 1
    assert (
        second["table"].equals(first["table"])
        and torch.equal(second["adapter"]["w"], torch.ones(2))
        and second["note"] == "x"
    )
    cache.get("step", {"k": 2}, compute)
    assert len(calls) == 2
    # An interrupted write leaves a folder without key.json: it is ignored and recomputed.
    folder = cache.folder("step", {"k": 3})
    folder.mkdir(parents=True)
    (folder / "values.json").write_text("{}")
    cache.get("step", {"k": 3}, compute)
    assert len(calls) == 3 and (folder / "key.json").is_file()


def test_cache_failure_leaves_no_entry(tmp_path):
    cache = Cache(tmp_path)

    def boom():
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        cache.get("step", {"k": 1}, boom)
    assert not cache.folder("step", {"k": 1}).exists()
