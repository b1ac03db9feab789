"""The languages mlul knows: codes, names, scripts, resource tiers, and how to pick them.

The ten shipped languages have curated metadata. Any other BCP 47 code (`it`, `ko`, `pt-BR`) is
accepted once `register`ed, which the data loader does for the languages of a user's file: its
names come from `langcodes`, its script from the text, its tier is "unknown" and its prompt labels
are the English "Question" / "Answer".
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    code: str  # BCP 47 tag (ISO 639-1 for the shipped ten)
    name: str  # English name
    native_name: str
    script: str  # writing system, e.g. "Latin", "Cyrillic"
    tier: str  # "high" or "low": how much of it a typical LLM saw in pre-training; "unknown" if not curated
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
TIERS = ("high", "low", "unknown")
# Languages from users' files, in the order they were registered.
_OUTSIDE: dict[str, Language] = {}
# Scripts written without spaces between words: a name is found inside running text.
UNSPACED_SCRIPTS = ("Han", "Japanese", "Thai", "Lao", "Khmer", "Myanmar", "Tibetan")
# ISO 639 codes that are valid tags but name no single language.
_NOT_A_LANGUAGE = ("und", "mul", "mis", "zxx")


def codes() -> list[str]:
    """The ten shipped languages, in registry order."""
    return list(LANGUAGES)


def registered() -> list[str]:
    """Every language mlul knows now: the shipped ten, then registered ones in registration order."""
    return [*LANGUAGES, *_OUTSIDE]


def order(langs: Iterable[str]) -> list[str]:
    """`langs` without duplicates, in registry order; codes mlul does not know go last, as given."""
    langs = list(dict.fromkeys(langs))
    known = [c for c in registered() if c in langs]
    return known + [c for c in langs if c not in known]


def _choices() -> str:
    return ", ".join(registered())


def get(code: str) -> Language:
    if code in LANGUAGES:
        return LANGUAGES[code]
    if code in _OUTSIDE:
        return _OUTSIDE[code]
    message = f"unknown language {code!r}; choose from {_choices()} (or all, {', '.join(TIERS)})"
    try:
        standard_code(code)
    except ValueError as err:
        raise ValueError(f"{message}; {err}") from None
    raise ValueError(f"{message}; other languages come from a data file that has rows in them")


def standard_code(code: str) -> str:
    """The standard form of a BCP 47 tag ("pt-br" -> "pt-BR", "eng" -> "en"); ValueError naming
    `code` if it is not a language tag."""
    import langcodes

    example = "a BCP 47 language code like it, ko or pt-BR"
    if not isinstance(code, str) or not langcodes.tag_is_valid(code):
        raise ValueError(f"{code!r} is not {example}")
    standard = langcodes.standardize_tag(code)
    if standard.split("-")[0] in _NOT_A_LANGUAGE:
        raise ValueError(f"{code!r} names no single language; use {example}")
    return standard


def script_of(ch: str) -> str | None:
    """The writing system of one character ("Latin", "Han", "Hangul", ...), None for non-letters."""
    if unicodedata.category(ch)[0] not in "LM":
        return None
    first = unicodedata.name(ch, "").split(" ")[0]
    if first in ("", "COMBINING", "MODIFIER"):  # marks and modifiers shared by many scripts
        return None
    if first in ("CJK", "IDEOGRAPHIC"):
        return "Han"
    if first in ("HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA"):
        return "Kana"
    return first.title()


def detect_script(text: str) -> str:
    """The main writing system of `text`, from the Unicode names of its letters: "Latin",
    "Cyrillic", "Han", "Japanese" (kana with or without kanji), "Hangul", "Arabic", "Devanagari", ...;
    "unknown" for a text without letters."""
    counts = Counter(script_of(ch) for ch in unicodedata.normalize("NFKC", text))
    counts.pop(None, None)
    if not counts:
        return "unknown"
    # Japanese mixes kanji (Han) with kana; any sizeable share of kana means Japanese.
    kana, han = counts.pop("Kana", 0), counts.get("Han", 0)
    if kana and kana >= 0.1 * sum(counts.values()):
        counts["Japanese"] = kana + counts.pop("Han", 0)
    elif kana:
        counts["Han"] = han + kana
    return counts.most_common(1)[0][0]


def register(code: str, sample_text: str = "") -> Language:
    """Make a language outside the shipped ten known (idempotent: a known code is returned as is).

    Its English and native names come from `langcodes`, its script from `sample_text`, its tier
    is "unknown", and its prompts use the English labels "Question" / "Answer".
    """
    if code in LANGUAGES or code in _OUTSIDE:
        return get(code)
    standard_code(code)
    import langcodes

    tag = langcodes.Language.get(code)
    script = detect_script(sample_text)
    unspaced = script in UNSPACED_SCRIPTS
    language = Language(
        code,
        tag.display_name(),
        tag.autonym(),
        script,
        "unknown",
        "Question",
        "Answer",
        colon="：" if script in ("Han", "Japanese") else ":",
        space="" if unspaced else " ",
    )
    _OUTSIDE[code] = language
    return language


def qa_prompt(code: str, question: str) -> str:
    """The question as a base model sees it; the answer follows as `answer_text`."""
    lang = get(code)
    return f"{lang.question_word}{lang.colon}{lang.space}{question}\n{lang.answer_word}{lang.colon}"


def answer_text(code: str, answer: str) -> str:
    return f"{get(code).space}{answer}"


def resolve(spec: str | Iterable[str] | None, available: Iterable[str] | None = None) -> list[str]:
    """Turn "en,fr", "all", "high", "low", "unknown", a list, or None (= all) into language codes.

    Without `available`, "all" is the shipped ten and any registered code may be named. With
    `available` (the languages present in the data), "all" means those, a tier filters them, and
    a code not in them is an error. Order follows the registry (so tables and plots line up),
    then `available`'s order; duplicates are dropped.
    """
    pool = codes() if available is None else order(available)
    if spec is None:
        return pool
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    parts = [p.strip() for p in parts if p and p.strip()]
    if not parts:
        raise ValueError(f"empty language list; give codes like 'en,fr' or one of all, {', '.join(TIERS)}")
    wanted: set[str] = set()
    for part in parts:
        if part == "all":
            wanted.update(pool)
        elif part in TIERS:
            tiers = registered() if available is None else pool
            matched = [c for c in tiers if _tier(c) == part]
            if not matched:
                where = "the shipped languages" if available is None else "the data"
                raise ValueError(f"no {part}-tier language in {where}; it has {', '.join(pool)}")
            wanted.update(matched)
        elif available is None:
            wanted.add(get(part).code)
        elif part in pool:
            wanted.add(part)
        else:
            raise ValueError(_not_in_data(part, pool))
    return [c for c in order([*pool, *wanted]) if c in wanted]


def _not_in_data(code: str, pool: list[str]) -> str:
    if code not in LANGUAGES and code not in _OUTSIDE:
        try:
            standard_code(code)
        except ValueError as err:
            return f"unknown language {code!r}; choose from {', '.join(pool)} (or all, {', '.join(TIERS)}); {err}"
    return f"language {code!r} is not in the data; it has {', '.join(pool)}"


def _tier(code: str) -> str:
    return get(code).tier if code in LANGUAGES or code in _OUTSIDE else "unknown"


def table():
    """The registry as a DataFrame: code, English and native name, script, tier."""
    import pandas as pd  # here, not at the top: the CLI starts without pandas

    return pd.DataFrame(
        [(x.code, x.name, x.native_name, x.script, x.tier) for x in map(get, registered())],
        columns=["code", "name", "native name", "script", "tier"],
    )
