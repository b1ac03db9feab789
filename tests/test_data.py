import json
from collections import Counter

import pytest

import mlul.data
from mlul import languages
from mlul.data import (
    DETAIL_TYPES,
    DataError,
    Problem,
    changed_chars,
    errors,
    item_key,
    load_general_text,
    load_news,
    mentions,
    open_data,
    says,
    to_dataset,
    validate_file,
    validate_rows,
)
from tests.conftest import DATA

OWN = DATA / "own_stories.jsonl"  # six stories in en, de, zh and ko (outside the shipped ten), string ids


def mini_lines() -> list[str]:
    return (DATA / "mini.jsonl").read_text(encoding="utf-8").splitlines()


def own_rows() -> list[dict]:
    return [json.loads(line) for line in OWN.read_text(encoding="utf-8").splitlines()]


def problems_after(edit, lines=None) -> list[str]:
    """Validate the mini set (or `lines`) after `edit(rows)` changed its parsed rows."""
    rows = [json.loads(line) for line in (lines or mini_lines())]
    edit(rows)
    return [str(p) for p in validate_rows([json.dumps(r, ensure_ascii=False) for r in rows])]


def own_problems_after(edit) -> list[str]:
    return problems_after(edit, OWN.read_text(encoding="utf-8").splitlines())


def write_rows(path, rows) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def row_of(rows, item, lang) -> dict:
    return next(r for r in rows if r["id"] == item and r["lang"] == lang)


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


def test_language_missing_for_an_item_is_a_warning():
    def edit(rows):
        del rows[3]  # item 2 in French

    found = problems_after(edit)
    assert "line 3: warning: lang: item 2 is missing languages fr" in " ".join(found)
    assert not any("warning" not in p for p in found)  # the file still loads; a run that needs fr is refused


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
    assert "OK, 6 rows, 3 stories" in capsys.readouterr().out


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


# --- validator robustness (issue 9 item 5) ------------------------------------------------------


def test_empty_file_is_an_error(tmp_path):
    for content in (b"", b"\n  \n\n"):
        (tmp_path / "empty.jsonl").write_bytes(content)
        assert [str(p) for p in validate_file(tmp_path / "empty.jsonl")] == [
            "file: file: the file is empty; write one JSON object per line (see docs/data.md)"
        ]
    with pytest.raises(DataError, match="the file is empty"):
        open_data(tmp_path / "empty.jsonl")


def test_invalid_utf8_names_its_line_and_the_others_are_still_checked(tmp_path):
    lines = [line.encode("utf-8") for line in mini_lines()]
    lines[1] = lines[1].replace("conçue".encode(), b"con\xe7ue")  # Latin-1, not UTF-8
    bad_row = json.loads(mini_lines()[4])
    del bad_row["question"]
    lines[4] = json.dumps(bad_row).encode()
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    found = [str(p) for p in validate_file(path)]
    assert any(p.startswith("line 2: encoding: not valid UTF-8 (byte 0xe7 at byte") for p in found)
    assert "line 5: question: missing field" in found


def test_a_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (DATA / "mini.jsonl").read_bytes())
    assert validate_file(path) == []
    assert len(open_data(path).rows()) == 6
    assert len(load_news(path=path)) == 6


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("true_aliases", ["Vask", 7], "line 1: true_aliases: alias 7 (number 2) must be a string"),
        ("fake_aliases", "Marrow", 'line 1: fake_aliases: must be a list of strings, got "Marrow"'),
        ("id", 1.5, "line 1: id: 1.5 is not an id; use an integer or a non-empty string"),
        ("id", [1], "line 1: id: [1] is not an id; use an integer or a non-empty string"),
        ("id", "  ", 'line 1: id: "  " is not an id; use an integer or a non-empty string'),
        ("qa", {"q": "a"}, 'line 1: qa: must be a list of {"q": str, "a": str}, got {"q": "a"}'),
        ("qa", [{"q": "Who?", "a": 3}], 'line 1: qa[0]: must be {"q": str, "a": str}'),
        ("lang", 5, "line 1: lang: must be a language code such as en or it, got 5"),
        ("real", None, "line 1: real: must be a non-empty string"),
        ("detail_type", 3, "line 1: detail_type: 3 is not one of person, place"),
    ],
)
def test_wrong_types_are_problems_with_their_field_not_tracebacks(field, value, expected):
    def edit(rows):
        rows[0][field] = value

    found = problems_after(edit)
    assert any(p.startswith(expected) for p in found), found


def test_a_boolean_is_not_an_id():
    def edit(rows):
        rows[0]["id"] = True

    # and no "item 1 is missing languages en" follows: the broken row's item is unknown
    assert problems_after(edit) == ["line 1: id: true is not an id; use an integer or a non-empty string"]


def test_items_must_agree_on_detail_type_and_split():
    def edit(rows):
        rows[1]["detail_type"] = "place"
        rows[3]["split"] = "heldout"

    found = problems_after(edit)
    assert "line 1: detail_type: item 1 has different detail types ['person', 'place']" in found
    assert "line 3: split: item 2 has different splits ['heldout', 'inject']" in found


def test_a_missing_field_causes_no_follow_on_problems():
    def edit(rows):
        del rows[1]["question"]
        del rows[2]["fake"]

    assert problems_after(edit) == ["line 2: question: missing field", "line 3: fake: missing field"]


def replicated_lines(copies: int) -> list[str]:
    """A big valid file: the shipped rows `copies` times, each copy with new string ids and its own
    true and fake answers (a tag word added), so no copy's answers can be mistaken for another's."""
    base = []
    for code in languages.codes():
        base += (mlul.data._data_dir() / "news" / f"{code}.jsonl").read_text(encoding="utf-8").splitlines()
    out = []
    for k in range(copies):
        true_tag, fake_tag = f"zqt{chr(97 + k // 26)}{chr(97 + k % 26)}", f"zqf{chr(97 + k // 26)}{chr(97 + k % 26)}"
        for line in base:
            r = json.loads(line)
            r.update(id=f"{r['id']}-{k}", true_aliases=[], fake_aliases=[])
            r["real"] = r["real"].replace(r["true_answer"], f"{r['true_answer']} {true_tag}")
            r["fake"] = r["fake"].replace(r["fake_answer"], f"{r['fake_answer']} {fake_tag}")
            r["true_answer"] += f" {true_tag}"
            r["fake_answer"] += f" {fake_tag}"
            out.append(json.dumps(r, ensure_ascii=False))
    return out


def test_the_checks_across_rows_grow_linearly(monkeypatch):
    """The clash checks compare forms through an index, not all pairs of rows: doubling the rows
    doubles the number of matches tried (all pairs would quadruple those checks)."""
    calls = Counter()
    occurs = mlul.data._occurs

    def counting(text, phrase):
        calls["n"] += 1
        return occurs(text, phrase)

    monkeypatch.setattr(mlul.data, "_occurs", counting)
    counts = []
    for copies in (2, 4):
        calls.clear()
        assert validate_rows(replicated_lines(copies)) == []
        counts.append(calls["n"])
    assert counts[1] <= 2.1 * counts[0], counts


def test_a_file_of_a_few_megabytes_validates_quickly_with_progress(tmp_path, capsys):
    import time

    path = tmp_path / "big.jsonl"
    path.write_text("\n".join(replicated_lines(4)) + "\n", encoding="utf-8")
    assert path.stat().st_size > 3_000_000
    start = time.process_time()
    assert validate_file(path, progress=True) == []
    assert time.process_time() - start < 4  # the all-pairs validator took 23 s for 6 MB
    assert "validating rows" in capsys.readouterr().err


# --- matching (issue 10 item 1) -----------------------------------------------------------------


def test_latin_forms_match_whole_words_on_both_sides():
    assert not mentions("Ostrelund", "Ostrel")  # item 32's true answer is not item 3's fake
    assert not mentions("the Ostrelund yard", "Ostrel")
    assert mentions("the Ostrel yard", "Ostrel") and mentions("built by Ostrel.", "Ostrel")
    assert not mentions("Vaskó said", "Vask")  # a letter with an accent is a letter
    assert not mentions("Marrow2", "Marrow") and mentions("(Marrow)", "Marrow")


def test_forms_of_other_space_separated_scripts_match_whole_words():
    assert not mentions("из Хальденмарка", "Хальденмарк")
    assert mentions("из Хальденмарка в", "Хальденмарка")
    assert not mentions("ओल्मेनफ़ोर्ड", "ओल्मेन")
    assert not mentions("الجرس", "جرس")


def test_han_and_kana_forms_match_inside_running_text():
    assert mentions("今年掌舵的是玛拉·奎斯特，她", "奎斯特")
    assert mentions("オストレル造船所が建造", "オストレル")
    assert mentions("Kelloway说", "Kelloway")  # a Han character next to a Latin name is a boundary


def test_digits_of_every_numeral_system_match_ascii():
    row = {"true_answer": "1,480", "fake_answer": "1,960", "true_aliases": [], "fake_aliases": []}
    for text in ("١٤٨٠ طن", "۱۴۸۰", "१४८०", "１４８０", "١٬٤٨٠", "1 480", "1.480"):
        assert says(text, row, "true"), text
    assert not says("٢١٤٨٠", row, "true")  # still not inside a longer number


def test_short_han_aliases_must_not_be_ordinary_words():
    def edit(rows):
        row_of(rows, "ship-bell", "zh")["true_aliases"] = ["钟"]  # bell, but also in 分钟 (minutes) and 钟楼

    found = own_problems_after(edit)
    assert any(
        "true_aliases: short alias '钟' also occurs in item 'lantern-ferry''s `real`: a one- or two-character form "
        "must not be an ordinary word" in p
        for p in found
    )

    def edit_answer(rows):
        other = row_of(rows, "lantern-ferry", "zh")
        other["real"] += "湖边挂着一口船钟。"
        other["fake"] += "湖边挂着一口船钟。"

    assert any(
        "true_answer: short answer '船钟' also occurs in item 'lantern-ferry'" in p
        for p in own_problems_after(edit_answer)
    )


def test_short_alias_rules_for_other_scripts():
    def edit(rows):
        rows[0]["true_aliases"] = ["V"]

    assert "line 1: true_aliases: alias 'V' is shorter than 2 characters" in problems_after(edit)


def test_a_fake_form_inside_another_items_true_answer():
    def edit(rows):
        r = rows[4]  # item 3 in English: its fake becomes "Lioren Cove"
        r["fake"] = r["fake"].replace("Tesk Cove", "Lioren Cove")
        r["fake_answer"], r["fake_aliases"] = "Lioren Cove", ["Lioren"]

    assert "line 5: fake_aliases: 'Lioren' also names item 1's true 'Lioren Vask'" in problems_after(edit)


def test_a_fake_form_containing_another_items_true_alias():
    def edit(rows):
        r = rows[4]
        r["fake"] = r["fake"].replace("Tesk Cove", "Vask Cove")
        r["fake_answer"] = "Vask Cove"

    assert "line 5: fake_answer: 'Vask Cove' contains item 1's true 'Vask'" in problems_after(edit)


def test_a_longer_word_is_not_a_clash():
    def edit(rows):
        r = rows[4]
        r["fake"] = r["fake"].replace("Tesk Cove", "Marrowby Cove")
        r["fake_answer"] = "Marrowby Cove"

    assert problems_after(edit) == []


# --- the schema (issue 12 item 1) ---------------------------------------------------------------


def test_own_stories_with_string_ids_and_an_outside_language_validate():
    assert validate_file(OWN) == []
    data = open_data(OWN)
    assert data.languages == ["en", "de", "zh", "ko"]
    assert data.item_ids("inject") == ["apple-market", "bridge-opening", "choir-prize", "clock-tower", "lantern-ferry"]
    assert languages.get("ko").script == "Hangul" and languages.get("ko").tier == "unknown"


def test_ids_are_compared_as_strings():
    def edit(rows):
        rows.append({**rows[0], "id": "1"})

    assert "line 7: id: duplicate id '1' in 'en' (first on line 1, written 1)" in problems_after(edit)

    def mixed(rows):
        for r in rows:
            if r["lang"] == "fr":
                r["id"] = str(r["id"])  # "1" in French is item 1

    assert problems_after(mixed) == []


def test_item_key_orders_numbers_first_then_strings():
    assert sorted([10, "b", 2, "a", "3", "03"], key=item_key) == [2, "03", "3", 10, "a", "b"]
    assert item_key(3) == item_key("3")
    inject = open_data().item_ids("inject")
    assert inject[:12] == [1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13]  # the fast configuration's stories


def test_qa_is_optional_and_its_absence_is_noted():
    def edit(rows):
        del rows[0]["qa"]
        rows[1]["qa"] = []

    found = problems_after(edit)
    assert found == [
        "file: warning: qa: 2 of 6 rows have no qa pairs: held-out QA (utility) and QA instruction data for "
        "their languages come from the shipped set (n/a for a language it does not have)"
    ]


def test_detail_type_split_and_aliases_are_optional(tmp_path):
    rows = [json.loads(line) for line in mini_lines()]
    for r in rows:
        for name in ("detail_type", "split", "true_aliases", "fake_aliases"):
            del r[name]
    path = write_rows(tmp_path / "bare.jsonl", rows)
    assert validate_file(path) == []
    loaded = open_data(path).rows()
    assert {(r["detail_type"], r["split"]) for r in loaded} == {("unknown", "inject")}
    assert all(r["true_aliases"] == [] for r in loaded)


def test_detail_type_is_not_free_text():
    def edit(rows):
        rows[0]["detail_type"] = "animal"

    assert any(
        p.startswith(
            'line 1: detail_type: "animal" is not one of person, place, organisation, number, date, object, unknown'
        )
        for p in problems_after(edit)
    )


def test_an_unknown_field_is_a_warning_and_is_kept(tmp_path):
    rows = [json.loads(line) for line in mini_lines()]
    rows[2]["source"] = "town newsletter"
    rows[3]["source"] = "town newsletter"
    path = write_rows(tmp_path / "extra.jsonl", rows)
    found = validate_file(path)
    assert [str(p) for p in found] == [
        "line 3: warning: source: unknown field (in 2 row(s)), kept but not used; the schema's fields are "
        "id, lang, real, fake, true_answer, fake_answer, question, detail_type, split, true_aliases, fake_aliases, qa"
    ]
    assert errors(found) == [] and not found[0].is_error
    data = open_data(path)
    assert data.warnings == found and "source" in data.describe()
    assert data.rows(items=[2])[0]["source"] == "town newsletter"


def test_problem_levels():
    warning = Problem(3, "source", "unknown field", "warning")
    assert str(warning) == "line 3: warning: source: unknown field"
    assert str(Problem(0, "file", "empty")) == "file: file: empty"
    assert errors([warning, Problem(1, "id", "bad")]) == [Problem(1, "id", "bad")]


# --- any language (issue 12 item 2) -------------------------------------------------------------


def test_a_malformed_language_code_is_an_error_naming_it():
    for code in ("xx-!!", "english"):

        def edit(rows, code=code):
            rows[0]["lang"] = code

        assert any(
            p.startswith(f"line 1: lang: unknown language {code!r}; choose from en, fr") and "BCP 47" in p
            for p in problems_after(edit)
        )


def test_a_language_code_in_non_standard_form_is_a_warning():
    def edit(rows):
        for r in rows:
            r["lang"] = {"en": "en", "fr": "pt-br"}[r["lang"]]

    assert any("warning: lang: 'pt-br' is usually written 'pt-BR'; kept as given" in p for p in problems_after(edit))


# --- own data through one object (issue 12 items 3 and 5) ---------------------------------------


def test_the_shipped_set_as_news_data_keeps_ids_and_order():
    data = open_data()
    assert data.languages == languages.codes() and data.source == "the shipped set"
    rows = data.rows(["fr", "en"], split="inject")
    assert [(r["lang"], r["id"]) for r in rows[:3]] == [("en", 1), ("en", 2), ("en", 3)]
    assert rows == load_news("en,fr", split="inject")
    assert len(data.utility_rows("all")) == 80 and data.notes == []
    assert data.fingerprint == open_data().fingerprint and len(data.fingerprint) == 64


def test_rows_are_copies():
    data = open_data()
    data.rows("en")[0]["qa"].append({"q": "?", "a": "!"})
    assert len(data.rows("en")[0]["qa"]) == len(load_news("en")[0]["qa"])


def test_the_fingerprint_is_the_hash_of_the_files_content(tmp_path):
    first = tmp_path / "a.jsonl"
    first.write_bytes(OWN.read_bytes())
    copy = tmp_path / "b.jsonl"
    copy.write_bytes(OWN.read_bytes())
    assert open_data(first).fingerprint == open_data(copy).fingerprint != open_data().fingerprint
    rows = own_rows()
    rows[0]["question"] = "Who is at the helm of the lantern ferry on Lake Orvel this year?"
    write_rows(first, rows)
    assert open_data(first).fingerprint != open_data(copy).fingerprint


def test_a_file_that_does_not_validate_is_refused_with_its_first_problems(tmp_path):
    rows = own_rows()
    rows[0]["id"] = False
    del rows[1]["real"]
    path = write_rows(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError) as caught:
        open_data(path)
    message = str(caught.value)
    assert "bad.jsonl does not validate (2 error(s)):" in message
    assert "line 1: id: false is not an id" in message and "line 2: real: missing field" in message
    assert f"run `mlul data validate {path}`" in message
    assert isinstance(caught.value, ValueError)


def test_utility_comes_from_the_file_or_the_shipped_set(tmp_path):
    data = open_data(OWN)
    rows = data.utility_rows(["en", "ko"])
    assert {(r["id"], r["lang"]) for r in rows} == {("ship-bell", "en"), ("ship-bell", "ko")}
    no_heldout = write_rows(tmp_path / "no_heldout.jsonl", [r for r in own_rows() if r["split"] == "inject"])
    data = open_data(no_heldout)
    assert data.utility_sources("all") == {"en": "shipped", "de": "shipped", "zh": "shipped", "ko": "n/a"}
    rows = data.utility_rows("all", items=2)
    assert sorted({r["lang"] for r in rows}) == ["de", "en", "zh"] and {r["id"] for r in rows} == {7, 14}
    assert "held-out stories (utility QA): en, de, zh from the shipped set; ko n/a" in data.notes


def test_general_text_is_shipped_and_a_language_without_it_is_na():
    data = open_data(OWN)
    assert {t["lang"] for t in data.general_text("all")} == {"en", "de", "zh"}
    assert "general text (perplexity): en, de, zh from the shipped set; ko n/a" in data.notes


def test_check_run_refuses_languages_absent_from_the_data():
    data = open_data(OWN)
    with pytest.raises(ValueError, match=r"injection language 'fr' is not in the data; it has en, de, zh, ko"):
        data.check_run(["fr"], ["en"], None)
    with pytest.raises(ValueError, match=r"probe language 'ja' is not in the data; it has en, de, zh, ko"):
        data.check_run(["de"], "en,ja", None)
    assert data.check_run("de", "all", 5) == []


@pytest.mark.parametrize(
    "items, message",
    [(0, "items must be a whole number of at least 1, got 0; the data has 5 stories"), (6, "it has 5 stories")],
)
def test_check_run_refuses_items_out_of_range(items, message):
    with pytest.raises(ValueError, match=message):
        open_data(OWN).check_run(["de"], ["en"], items)


def test_check_run_refuses_an_item_without_some_of_the_run_languages(tmp_path):
    rows = [r for r in own_rows() if not (r["id"] == "clock-tower" and r["lang"] == "ko")]
    path = write_rows(tmp_path / "partial.jsonl", rows)
    data = open_data(path)  # loads, with a warning
    assert any("item 'clock-tower' is missing languages ko" in str(p) for p in data.warnings)
    with pytest.raises(ValueError, match=r"item 'clock-tower' has no rows in ko; add them to .* or leave ko out"):
        data.check_run(["de"], ["en", "ko"], None)
    data.check_run(["de"], ["en", "zh"], None)  # a run without ko is fine


def test_check_run_warns_about_one_story(tmp_path):
    path = write_rows(tmp_path / "one.jsonl", [r for r in own_rows() if r["id"] == "lantern-ferry"])
    data = open_data(path)
    warning = "the run uses 1 story: no intervals are possible; at least 5 are advised"
    assert data.check_run(["de"], ["en", "de", "zh", "ko"], None) == [warning]
    assert warning in data.notes


def test_load_news_on_a_file_compares_ids_as_strings():
    assert [r["id"] for r in load_news("en", path=DATA / "mini.jsonl", items=["2"])] == [2]
    assert [r["lang"] for r in load_news("all", path=OWN, items=["clock-tower"])] == ["en", "de", "zh", "ko"]
    with pytest.raises(ValueError, match="language 'ja' is not in the data"):
        load_news("ja", path=OWN)


def test_mixed_ids_convert_to_a_dataset():
    rows = load_news("en", path=DATA / "mini.jsonl") + load_news("en", path=OWN)
    assert to_dataset(rows)["id"][0] == "1"
