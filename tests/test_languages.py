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


@pytest.fixture
def registry(monkeypatch):
    """An empty set of outside languages, so tests do not see each other's registrations."""
    monkeypatch.setattr(languages, "_OUTSIDE", {})
    return languages


def test_an_outside_language_gets_names_from_langcodes_and_script_from_text(registry):
    ko = registry.register("ko", "올해 이 배는 마라 퀴스트 선장이 몬다.")
    assert (ko.name, ko.native_name, ko.script, ko.tier) == ("Korean", "한국어", "Hangul", "unknown")
    assert registry.qa_prompt("ko", "누구인가?") == "Question: 누구인가?\nAnswer:"  # English labels
    pt = registry.register("pt-BR", "O prefeito de São Paulo")
    assert (pt.name, pt.script) == ("Portuguese (Brazil)", "Latin")
    assert registry.register("ko", "") is ko  # idempotent
    assert registry.register("fr", "") is registry.LANGUAGES["fr"]  # the shipped ten keep their metadata
    assert registry.registered() == [*registry.codes(), "ko", "pt-BR"] and registry.codes() == list(registry.LANGUAGES)


def test_han_and_japanese_outside_languages_use_a_full_width_colon(registry):
    registry.register("yue", "今日天氣好好，我哋去飲茶。")
    assert registry.qa_prompt("yue", "邊個？") + registry.answer_text("yue", "佢") == "Question：邊個？\nAnswer：佢"


@pytest.mark.parametrize(
    "text, script",
    [
        ("Città di Roma", "Latin"),
        ("Новый мост", "Cyrillic"),
        ("灯笼渡船", "Han"),
        ("東京で会議が開かれた", "Japanese"),
        ("등불 나룻배", "Hangul"),
        ("جرس برونزي", "Arabic"),
        ("नया पुल", "Devanagari"),
        ("Η νέα γέφυρα", "Greek"),
        ("12, 34.", "unknown"),
    ],
)
def test_detect_script(text, script):
    assert languages.detect_script(text) == script


@pytest.mark.parametrize("code", ["xx-!!", "english", "und"])
def test_a_malformed_code_is_a_clear_error(registry, code):
    with pytest.raises(ValueError, match=f"'{code}'.*BCP 47 language code like it, ko or pt-BR"):
        registry.register(code)
    with pytest.raises(ValueError, match=f"unknown language '{code}'; choose from en"):
        registry.get(code)


def test_resolve_within_the_languages_of_the_data(registry):
    registry.register("ko", "등불 나룻배")
    available = ["en", "de", "zh", "ko"]
    assert registry.resolve("all", available=available) == available
    assert registry.resolve("high", available=available) == ["en", "de", "zh"]
    assert registry.resolve("unknown", available=available) == ["ko"]
    assert registry.resolve("ko,en", available=available) == ["en", "ko"]
    with pytest.raises(ValueError, match=r"language 'es' is not in the data; it has en, de, zh, ko"):
        registry.resolve("es", available=available)
    with pytest.raises(ValueError, match=r"no low-tier language in the data; it has en, de, zh, ko"):
        registry.resolve("low", available=available)
    assert registry.resolve("all") == registry.codes()  # without data: the shipped ten, as before
    assert registry.resolve("ko,en") == ["en", "ko"]


def test_order_puts_registered_languages_first():
    assert languages.order(["sw", "qq", "en", "sw"]) == ["en", "sw", "qq"]


def test_standard_code():
    assert languages.standard_code("pt-br") == "pt-BR" and languages.standard_code("eng") == "en"


def test_importing_languages_does_not_import_pandas():
    import subprocess
    import sys

    code = "import sys, mlul.languages; print('pandas' in sys.modules, 'langcodes' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    assert list(languages.table().columns) == ["code", "name", "native name", "script", "tier"]
