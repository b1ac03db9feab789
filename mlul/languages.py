"""The languages mlul knows: codes, names, scripts, resource tiers, and how to pick them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Language:
    code: str  # ISO 639-1
    name: str  # English name
    native_name: str
    script: str  # writing system, e.g. "Latin", "Cyrillic"
    tier: str  # "high" or "low": how much of it a typical LLM saw in pre-training
    question_word: str  # prompt labels, so a base model sees a natural Q/A format
    answer_word: str
    colon: str = ":"  # CJK writing uses a full-width colon and no space after it
    space: str = " "


LANGUAGES: dict[str, Language] = {
    lang.code: lang
    for lang in [
        Language("en", "English", "English", "Latin", "high", "Question", "Answer"),
        Language("fr", "French", "Français", "Latin", "high", "Question", "Réponse"),
        Language("de", "German", "Deutsch", "Latin", "high", "Frage", "Antwort"),
        Language("es", "Spanish", "Español", "Latin", "high", "Pregunta", "Respuesta"),
        Language("ru", "Russian", "Русский", "Cyrillic", "high", "Вопрос", "Ответ"),
        Language("zh", "Chinese", "中文", "Han", "high", "问题", "答案", "：", ""),
        Language("ja", "Japanese", "日本語", "Japanese", "high", "質問", "答え", "：", ""),
        Language("ar", "Arabic", "العربية", "Arabic", "low", "سؤال", "جواب"),
        Language("hi", "Hindi", "हिन्दी", "Devanagari", "low", "प्रश्न", "उत्तर"),
        Language("sw", "Swahili", "Kiswahili", "Latin", "low", "Swali", "Jibu"),
    ]
}
TIERS = ("high", "low")


def codes() -> list[str]:
    return list(LANGUAGES)


def get(code: str) -> Language:
    if code not in LANGUAGES:
        raise ValueError(f"unknown language {code!r}; choose from {', '.join(LANGUAGES)} (or all, high, low)")
    return LANGUAGES[code]


def qa_prompt(code: str, question: str) -> str:
    """The question as a base model sees it; the answer follows as `answer_text`."""
    lang = get(code)
    return f"{lang.question_word}{lang.colon}{lang.space}{question}\n{lang.answer_word}{lang.colon}"


def answer_text(code: str, answer: str) -> str:
    return f"{get(code).space}{answer}"


def resolve(spec: str | Iterable[str] | None) -> list[str]:
    """Turn "en,fr", "all", "high", "low", a list, or None (= all) into language codes.

    Order follows the registry (so tables and plots line up), duplicates are dropped.
    """
    if spec is None:
        return codes()
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    parts = [p.strip() for p in parts if p and p.strip()]
    if not parts:
        raise ValueError(f"empty language list; give codes like 'en,fr' or one of all, {', '.join(TIERS)}")
    wanted: set[str] = set()
    for part in parts:
        if part == "all":
            wanted.update(LANGUAGES)
        elif part in TIERS:
            wanted.update(c for c, lang in LANGUAGES.items() if lang.tier == part)
        else:
            wanted.add(get(part).code)
    return [c for c in LANGUAGES if c in wanted]


def table() -> pd.DataFrame:
    """The registry as a DataFrame: code, English and native name, script, tier."""
    return pd.DataFrame(
        [(x.code, x.name, x.native_name, x.script, x.tier) for x in LANGUAGES.values()],
        columns=["code", "name", "native name", "script", "tier"],
    )
