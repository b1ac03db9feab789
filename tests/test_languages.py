import pytest

from mlul import languages


def test_registry_has_ten_languages_in_four_scripts_and_two_tiers():
    langs = languages.LANGUAGES.values()
    assert len(languages.LANGUAGES) >= 10
    assert len({lang.script for lang in langs}) >= 4
    assert {lang.tier for lang in langs} == {"high", "low"}
    assert all(lang.native_name and lang.name for lang in langs)


def test_resolve_specs():
    assert languages.resolve("fr,en") == ["en", "fr"]  # registry order
    assert languages.resolve(["sw", " de "]) == ["de", "sw"]
    assert languages.resolve("all") == languages.codes()
    assert languages.resolve(None) == languages.codes()
    assert languages.resolve("low") == ["ar", "hi", "sw"]
    assert "en" in languages.resolve("high") and "sw" not in languages.resolve("high")
    assert languages.resolve("low,en") == ["en", "ar", "hi", "sw"]


def test_unknown_language_lists_valid_codes():
    with pytest.raises(ValueError, match=r"unknown language 'xx'; choose from en, fr, de.*sw"):
        languages.resolve("en,xx")


def test_empty_language_list_is_an_error():
    with pytest.raises(ValueError, match="empty language list"):
        languages.resolve(" , ")


def test_qa_prompt_uses_native_labels():
    assert languages.qa_prompt("fr", "Qui ?") == "Question: Qui ?\nRéponse:"
    assert languages.qa_prompt("zh", "谁？") + languages.answer_text("zh", "张") == "问题：谁？\n答案：张"
    assert languages.answer_text("de", "Anna") == " Anna"
