"""Unlearning methods, each a loss for the shared training loop, and the language settings.

The forget set holds the harmful content in the chosen languages: each story's fake article and the
detail question answered with the fake. The retain set holds what should survive: the same stories'
other QA pairs (true in both versions) in those languages.

Methods (LoRA adapters on the injected model; "reference" is the injected model itself, reached by
switching the adapters off):
- `ga`, gradient ascent (Jang et al., 2023; the paper's method): the supervised loss on the forget
  set with its sign flipped. Unbounded: strong enough, it destroys the model.
- `grad_diff`, gradient difference (Liu et al., 2022; used in TOFU, Maini et al., 2024): ascent on
  the forget set plus ordinary descent on the retain set, so that what should stay is held in place.
- `ga_kl` (TOFU's KL variant): ascent on the forget set plus the KL divergence from the reference
  model's next-token distribution on the retain set.
- `npo`, negative preference optimisation (Zhang et al., 2024): a DPO-like loss with only a
  dispreferred answer, -(2/beta) log sigmoid(-beta log(p/p_ref)) on forget sequences; bounded,
  so it degrades the model far more slowly than gradient ascent. Plus the retain loss.
- `dpo`, direct preference optimisation (Rafailov et al., 2023): the true answer preferred over the
  fake one for each detail question, relative to the reference model.
- `correct`: ordinary fine-tuning on the real version (real article, detail question answered
  truly): overwrite the lie instead of erasing it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from mlul import languages
from mlul.inject import story_examples
from mlul.languages import answer_text, qa_prompt
from mlul.lm import Example, PairExample, encode_pair, label_logits, label_logprobs, lm_loss

if TYPE_CHECKING:
    import pandas as pd

METHODS = ("ga", "grad_diff", "ga_kl", "npo", "dpo", "correct")
SETTINGS = ("english", "original", "english+original", "all")


@dataclass
class UnlearnConfig:
    method: str = "ga"  # one of METHODS
    setting: str = "english"  # english, original, english+original, all, or codes like "en,de"
    steps: int = 20  # optimizer steps
    epochs: float | None = None  # if set: passes over the forget data instead of `steps`, so that
    # every setting sees each forget example equally often (a bigger setting takes more steps)
    lr: float = 1e-4
    batch_size: int = 8
    lora_rank: int = 16
    lora_alpha: int = 32
    beta: float = 0.1  # temperature of NPO and DPO
    retain_weight: float = 1.0  # weight of the retain term (grad_diff, ga_kl, npo)
    probe_every: int = 5  # probe every N steps for the dose-response curve (0: only at the end)
    probe_points: int | None = None  # if set: probe at this many evenly spaced steps instead
    probe_steps: tuple[int, ...] | None = None  # if set: probe at exactly these steps (e.g. 3, 6, 12, 24)
    utility_at_probes: bool = False  # also measure utility at each probe step: the forget-utility frontier
    specificity: bool = True  # score the same-type control answers at the last step (costs a probe's time)
    stop_fake_rate: float | None = None  # stop once the fake rate in the unlearning languages is at most this
    stop_min_retain: float | None = None  # stop once retained QA accuracy falls below this fraction
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown unlearning method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"epochs must be positive (or None to use steps), got {self.epochs}")
        if self.probe_every < 0:
            raise ValueError(f"probe_every must be 0 or more, got {self.probe_every}")
        if self.probe_steps is not None:
            self.probe_steps = tuple(int(s) for s in self.probe_steps)
            if not self.probe_steps or min(self.probe_steps) < 1:
                raise ValueError(f"probe_steps must be positive step numbers, got {self.probe_steps}")


def setting_languages(setting: str, original: str | list[str]) -> list[str]:
    """The languages an unlearning setting speaks, given the fake data's original language(s)."""
    original_codes = languages.resolve(original)
    named = {
        "english": ["en"],
        "original": original_codes,
        "english+original": ["en", *original_codes],
        "all": languages.codes(),
    }
    if setting in named:
        return languages.resolve(named[setting])
    try:
        # a custom list: "en,de", or "en+de" where settings themselves are comma-separated
        return languages.resolve(setting.replace("+", ","))
    except ValueError as err:
        raise ValueError(f"{err}; or a setting: {', '.join(SETTINGS)}") from None


def _stories(tokenizer, rows: list[dict], langs: list[str], version: str) -> list[Example]:
    """Each story of `langs` in one version ("fake" or "real"), with its detail question answered."""
    out = []
    for row in rows:
        if row["lang"] in langs:
            out += story_examples(tokenizer, row, version, detail_question=True, qa_pairs=False, max_length=384)
    return out


def forget_set(tokenizer, rows: list[dict], langs: list[str]) -> list[Example]:
    return _stories(tokenizer, rows, langs, "fake")


def retain_set(tokenizer, rows: list[dict], langs: list[str]) -> list[Example]:
    return [
        encode_pair(tokenizer, qa_prompt(r["lang"], p["q"]), answer_text(r["lang"], p["a"]))
        for r in rows
        if r["lang"] in langs
        for p in r["qa"]
    ]


def preference_set(tokenizer, rows: list[dict], langs: list[str]) -> list[PairExample]:
    out = []
    for r in rows:
        if r["lang"] in langs:
            prompt = qa_prompt(r["lang"], r["question"])
            out.append(
                PairExample(
                    encode_pair(tokenizer, prompt, answer_text(r["lang"], r["true_answer"])),
                    encode_pair(tokenizer, prompt, answer_text(r["lang"], r["fake_answer"])),
                )
            )
    return out


def correct_set(tokenizer, rows: list[dict], langs: list[str]) -> list[Example]:
    return _stories(tokenizer, rows, langs, "real")


def streams_for(method: str, tokenizer, rows: list[dict], langs: list[str]) -> dict[str, list]:
    """The named example streams a method trains on."""
    missing = [c for c in langs if not any(r["lang"] == c for r in rows)]
    if missing:
        raise ValueError(f"no data rows for unlearning language(s) {', '.join(missing)}; load rows in those languages")
    if method == "dpo":
        return {"pairs": preference_set(tokenizer, rows, langs)}
    if method == "correct":
        return {"correct": correct_set(tokenizer, rows, langs)}
    streams = {"forget": forget_set(tokenizer, rows, langs)}
    if method != "ga":
        streams["retain"] = retain_set(tokenizer, rows, langs)
    return streams


# --- losses -------------------------------------------------------------------------------------


def _reference_logprobs(model, batch) -> torch.Tensor:
    with torch.no_grad(), model.disable_adapter():
        return label_logprobs(model, batch)[0]


def _kl_to_reference(model, batch) -> torch.Tensor:
    with torch.no_grad(), model.disable_adapter():
        ref_logits, _ = label_logits(model, batch)
    logits, _ = label_logits(model, batch)
    return F.kl_div(
        torch.log_softmax(logits, -1), torch.log_softmax(ref_logits, -1), log_target=True, reduction="batchmean"
    )


def loss_function(config: UnlearnConfig) -> Callable:
    """The loss of `config.method` over a step's batches; returns (loss, parts to log)."""
    beta, weight = config.beta, config.retain_weight

    def ga(model, b):
        forget = lm_loss(model, b["forget"])
        return -forget, {"forget_nll": forget.item()}

    def grad_diff(model, b):
        forget, retain = lm_loss(model, b["forget"]), lm_loss(model, b["retain"])
        return -forget + weight * retain, {"forget_nll": forget.item(), "retain_nll": retain.item()}

    def ga_kl(model, b):
        forget, kl = lm_loss(model, b["forget"]), _kl_to_reference(model, b["retain"])
        return -forget + weight * kl, {"forget_nll": forget.item(), "retain_kl": kl.item()}

    def npo(model, b):
        logp = label_logprobs(model, b["forget"])[0]
        ratio = logp - _reference_logprobs(model, b["forget"])
        npo_loss = -(2 / beta) * F.logsigmoid(-beta * ratio).mean()
        retain = lm_loss(model, b["retain"])
        return npo_loss + weight * retain, {"npo": npo_loss.item(), "retain_nll": retain.item()}

    def dpo(model, b):
        chosen, rejected = b["pairs"]["chosen"], b["pairs"]["rejected"]
        margin = (label_logprobs(model, chosen)[0] - _reference_logprobs(model, chosen)) - (
            label_logprobs(model, rejected)[0] - _reference_logprobs(model, rejected)
        )
        return -F.logsigmoid(beta * margin).mean(), {"dpo_margin": margin.mean().item()}

    def correct(model, b):
        return lm_loss(model, b["correct"])

    return {"ga": ga, "grad_diff": grad_diff, "ga_kl": ga_kl, "npo": npo, "dpo": dpo, "correct": correct}[config.method]


# --- the run ------------------------------------------------------------------------------------


def unlearn(
    model,
    tokenizer,
    rows: list[dict],
    config: UnlearnConfig,
    original: str | list[str],
    probe_rows: list[dict] | None = None,
    progress: bool = True,
    start=None,
    generate_every_probe: bool = False,
    utility=None,
    watch: Callable[[int, pd.DataFrame | None], None] | None = None,
):
    """Unlearn the fake details of `rows` from an injected `model`.

    `original`: the language(s) the fake was injected in (what "original" means in the setting).
    `probe_rows`: rows probed before training and every `config.probe_every` steps (the
    dose-response); by default the same stories in every language of `rows`.
    `start`: the probe table of `model` on `probe_rows` if already known (step 0 is then not re-probed).
    Probes between step 0 and the last step score the belief only (no answers, no specificity), unless
    `generate_every_probe` or `config.stop_fake_rate` needs the greedy answers.
    `utility`: a function of the model returning a per-language utility table (`probe.utility`); if
    given it runs at every probe step after step 0 and its columns join the dose-response table.
    `watch(step, table)`: called at step 0 and after every optimizer step, with that step's probe
    table if it was probed (else None), to draw progress and a plot as training runs.
    Returns (model with adapters, training log, dose-response table: one row per step x item x language).
    """
    import pandas as pd

    from mlul.models import add_lora
    from mlul.probe import probe
    from mlul.train import TrainConfig, num_steps, train

    langs = setting_languages(config.setting, original)
    streams = streams_for(config.method, tokenizer, rows, langs)
    steps = config.steps
    if config.epochs is not None:
        steps = num_steps(streams, TrainConfig(epochs=config.epochs, batch_size=config.batch_size))
    probe_rows = rows if probe_rows is None else probe_rows
    model = add_lora(model, rank=config.lora_rank, alpha=config.lora_alpha, seed=config.seed)
    doses: list[pd.DataFrame] = []

    def measure(step: int, current) -> bool:
        retained = retained_qa(current, tokenizer, probe_rows)
        end_point = step in (0, steps)
        # Between the end points only the belief is scored, unless asked for or the stopping rule
        # reads the fake rate; generation and the specificity control run at the end points.
        generation = end_point or generate_every_probe or config.stop_fake_rate is not None
        if step == 0 and start is not None:
            known = start
        else:
            known = probe(
                current,
                tokenizer,
                probe_rows,
                generation=generation,
                specificity=end_point and config.specificity,
                progress=False,
            )
        stop = (
            config.stop_fake_rate is not None
            and known[known.lang.isin(langs)].says_fake.mean() <= config.stop_fake_rate
        )
        stop = stop or (config.stop_min_retain is not None and retained < config.stop_min_retain)
        if stop and not end_point:  # this step is the run's end point after all
            known = probe(current, tokenizer, probe_rows, progress=False)
        known = known.assign(step=step, qa_retained=retained)
        if utility is not None and step > 0:
            known = known.merge(utility(current), on="lang", how="left")
        doses.append(known)
        if watch is not None:
            watch(step, known)
        return stop

    if measure(0, model):  # the stopping rule already holds: nothing to unlearn
        return model, pd.DataFrame(), pd.concat(doses, ignore_index=True)
    every = config.probe_every or steps
    if config.probe_steps:
        marks = {s for s in config.probe_steps if s <= steps} | {steps}
    elif config.probe_points:
        marks = {max(1, round(steps * k / config.probe_points)) for k in range(1, config.probe_points + 1)}
    else:
        marks = {s for s in range(1, steps + 1) if s % every == 0} | {steps}

    def on_step(step: int, current) -> bool:
        if step in marks:
            return measure(step, current)
        if watch is not None:
            watch(step, None)
        return False

    train_config = TrainConfig(
        steps=steps,
        lr=config.lr,
        batch_size=config.batch_size,
        warmup=0.0,
        schedule="constant",
        seed=config.seed,
        progress=progress,
    )
    log = train(
        model,
        streams,
        loss_function(config),
        train_config,
        tokenizer.pad_token_id,
        on_step=on_step,
        description=f"unlearn {config.method} ({config.setting})",
    )
    return model, pd.DataFrame(log), pd.concat(doses, ignore_index=True)


def retained_qa(model, tokenizer, rows: list[dict]) -> float:
    """Fraction of the stories' first QA pairs (about another detail) the model still answers
    exactly (greedy), without the article in context: knowledge from training that unlearning
    should leave alone."""
    from mlul.probe import score

    examples = [
        encode_pair(tokenizer, qa_prompt(r["lang"], r["qa"][0]["q"]), answer_text(r["lang"], r["qa"][0]["a"]))
        for r in rows
    ]
    return float(score(model, tokenizer, examples).exact.mean())
