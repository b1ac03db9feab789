"""The real default model, Gemma 3 270M from the PyPI GGUF package (converted once, then cached)."""

import pytest

from mlul.lm import encode_pair
from mlul.models import load_model
from mlul.probe import generate, score

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma():
    return load_model("gemma-3-270m", device="cpu")


def test_real_model_answers_in_two_languages(gemma):
    model, tokenizer = gemma
    answers = generate(
        model,
        tokenizer,
        ["The capital of France is the city of", "La capitale de l'Allemagne est la ville de"],
        max_new_tokens=4,
    )
    assert "Paris" in answers[0], answers
    assert "Berlin" in answers[1], answers


@pytest.mark.parametrize(
    "prompt, right, wrong",
    [
        ("日本の首都は", "東京", "大阪"),
        ("Столица Франции —", " Париж", " Лондон"),
        ("中国的首都是", "北京", "上海"),
        ("عاصمة مصر هي", " القاهرة", " بغداد"),
    ],
)
def test_real_model_knows_capitals_in_non_latin_scripts(gemma, prompt, right, wrong):
    model, tokenizer = gemma
    logp = score(model, tokenizer, [encode_pair(tokenizer, prompt, right), encode_pair(tokenizer, prompt, wrong)]).logp
    assert logp[0] > logp[1], (prompt, list(logp))
