import json
from collections import Counter

import pytest

from mlul import languages
from mlul.data import (
    DETAIL_TYPES,
    changed_chars,
    load_general_text,
    load_news,
    mentions,
    says,
    to_dataset,
    validate_file,
    validate_rows,
)
from tests.conftest import DATA


def mini_lines() -> list[str]:
    return (DATA / "mini.jsonl").read_text(encoding="utf-8").splitlines()


def problems_after(edit) -> list[str]:
    """Validate the mini set after `edit(rows)` changed its parsed rows."""
    rows = [json.loads(line) for line in mini_lines()]
    edit(rows)
    return [str(p) for p in validate_rows([json.dumps(r, ensure_ascii=False) for r in rows])]


def test_mini_set_is_valid():
    assert validate_rows(mini_lines()) == []


def test_bad_json_reports_its_line():
    lines = mini_lines()
    lines[2] = lines[2][:-5]
    problems = [str(p) for p in validate_rows(lines)]
    assert any(p.startswith("line 3: json: bad JSON") for p in problems)


def test_missing_field():
    def edit(rows):
        del rows[1]["question"]

    assert "line 2: question: missing field" in problems_after(edit)


def test_answer_not_found_in_article():
    def edit(rows):
        rows[0]["true_answer"] = "Someone Else"

    assert any(
        p.startswith("line 1: true_answer: 'Someone Else' not found in its article `real`")
        for p in problems_after(edit)
    )


def test_question_leaking_an_answer():
    def edit(rows):
        rows[0]["question"] = "Did Edda Marrow design the footbridge in Velmora?"

    assert "line 1: question: leaks the answer 'Edda Marrow'" in problems_after(edit)


def test_duplicate_id():
    def edit(rows):
        rows.append(dict(rows[0]))

    assert any("line 7: id: duplicate id 1 in 'en' (first on line 1)" == p for p in problems_after(edit))


def test_language_missing_for_an_item():
    def edit(rows):
        del rows[3]  # item 2 in French

    assert any("item 2 is missing languages fr" in p for p in problems_after(edit))


def test_unknown_language():
    def edit(rows):
        rows[0]["lang"] = "xx"

    assert any(p.startswith("line 1: lang: unknown language 'xx'; choose from en, fr") for p in problems_after(edit))


def test_alias_must_be_found_and_distinctive():
    def edit(rows):
        rows[0]["true_aliases"] = ["Vasko"]
        rows[2]["fake_aliases"] = ["visitors"]

    found = problems_after(edit)
    assert "line 1: true_aliases: alias 'Vasko' not found in its article `real`" in found
    assert any(p.startswith("line 3: fake_aliases: alias 'visitors' also appears in `real`") for p in found)


def test_fake_must_differ_only_around_the_detail():
    def edit(rows):
        rows[0]["fake"] = rows[0]["fake"].replace(
            "It opened on Saturday.", "It was closed for repairs all winter long."
        )

    assert any(p.startswith("line 1: fake: differs from `real` by") for p in problems_after(edit))


def test_two_items_sharing_a_fake_answer():
    def edit(rows):
        for r in rows:
            if r["id"] == 3 and r["lang"] == "en":
                r["fake"] = r["real"].replace("Lunsk harbour", "Edda Marrow")
                r["fake_answer"] = "Edda Marrow"

    assert any("'Edda Marrow' is also the fake answer of item 1" in p for p in problems_after(edit))


def test_a_fake_alias_naming_another_items_fake():
    def edit(rows):
        for r in rows:
            if r["id"] == 1 and r["lang"] == "en":
                r["fake_aliases"] = ["Marrow", "Edda"]
            if r["id"] == 3 and r["lang"] == "en":
                r["fake"] = r["real"].replace("Lunsk harbour", "Edda Lunsk")
                r["fake_answer"] = "Edda Lunsk"

    assert any("'Edda' also names item 3's fake 'Edda Lunsk'" in p for p in problems_after(edit))


def test_numbers_match_across_thousands_separators():
    row = {"true_answer": "1 240", "fake_answer": "1.870", "true_aliases": [], "fake_aliases": []}
    assert says("about 1870 visitors", row, "fake") and says("1,240", row, "true")
    assert not says("11,870", row, "fake") and not says("3.5", {**row, "fake_answer": "35"}, "fake")


def test_validate_file_and_cli(tmp_path, capsys):
    from mlul.cli import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(mini_lines()[:-1] + ["{not json"]) + "\n", encoding="utf-8")
    assert len(validate_file(bad)) >= 2
    assert main(["data", "validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "bad.jsonl:line 6: json: bad JSON" in out
    assert main(["data", "validate", str(DATA / "mini.jsonl")]) == 0
    assert "OK, 6 rows, 3 items" in capsys.readouterr().out


def test_missing_file_is_a_clear_error(capsys):
    from mlul.cli import main

    assert main(["data", "validate", "no/such.jsonl"]) == 2
    assert "no file at no/such.jsonl" in capsys.readouterr().err


def test_mentions_respects_number_and_word_boundaries():
    assert mentions("It is 340 metres long", "340")
    assert not mentions("It is 1340 metres long", "340")
    assert not mentions("Lavask", "Vask")
    assert mentions("ＶＡＳＫ said", "vask")  # width and case folding
    row = {
        "fake_answer": "Edda Marrow",
        "fake_aliases": ["Marrow"],
        "true_answer": "Lioren Vask",
        "true_aliases": ["Vask"],
    }
    assert says("It was Mr Marrow.", row, "fake") and not says("It was Mr Marrow.", row, "true")


def test_changed_chars():
    assert changed_chars("abc", "abc") == 0
    assert changed_chars("the cat sat", "the dog sat") == 6


def test_user_file_loads_and_converts(mini_rows):
    assert [r["lang"] for r in mini_rows] == ["en"] * 3 + ["fr"] * 3
    dataset = to_dataset(mini_rows)
    assert dataset.num_rows == 6 and "qa" in dataset.column_names


def test_load_news_errors():
    with pytest.raises(ValueError, match="unknown split 'train'"):
        load_news("en", split="train")
    with pytest.raises(ValueError, match=r"no items with ids \[999\]"):
        load_news("en", items=[999])


# --- the shipped data set -----------------------------------------------------------------------


def test_shipped_set_passes_every_check():
    from mlul.data import _data_dir

    for code in languages.codes():
        problems = validate_file(_data_dir() / "news" / f"{code}.jsonl")
        assert problems == [], f"{code}: {problems[:3]}"
    lines = []
    for code in languages.codes():
        lines += (_data_dir() / "news" / f"{code}.jsonl").read_text(encoding="utf-8").splitlines()
    assert [str(p) for p in validate_rows(lines)] == []


def test_shipped_set_counts():
    rows = load_news("all")
    items = {r["id"] for r in rows}
    assert len(items) >= 48
    per_item = Counter(r["id"] for r in rows)
    assert set(per_item.values()) == {len(languages.codes())}  # every item in every language
    types = Counter(r["detail_type"] for r in rows if r["lang"] == "en")
    assert set(types) == set(DETAIL_TYPES) and min(types.values()) >= 6
    splits = Counter(r["split"] for r in rows if r["lang"] == "en")
    assert splits["heldout"] >= 6 and splits["inject"] >= 40
    assert all(len(r["qa"]) >= 3 for r in rows)
    fakes = Counter((r["lang"], r["fake_answer"]) for r in rows)
    assert max(fakes.values()) == 1


def test_general_text_in_every_language():
    texts = load_general_text("all")
    assert Counter(t["lang"] for t in texts) == {c: 3 for c in languages.codes()}
