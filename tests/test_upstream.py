import json

import pytest

from mlul.data import read_jsonl, validate_rows
from mlul.data.upstream import from_upstream, load_upstream, replaced_span
from tests.conftest import DATA


def test_upstream_records_map_to_valid_rows():
    rows = from_upstream(read_jsonl(DATA / "upstream_sample.jsonl"))
    assert [r["true_answer"] for r in rows] == ["Mina Solberg", "Lake Orven"]
    assert [r["fake_answer"] for r in rows] == ["Jonas Petrov", "Mount Kessa"]
    assert rows[0]["qa"][1] == {"q": "Who cut the ribbon?", "a": "Mayor Tom Reed"}
    assert validate_rows([json.dumps(r) for r in rows]) == []


def test_replaced_span_widens_to_whole_words():
    assert replaced_span("It holds 1,240 books.", "It holds 1,870 books.", "1,870") == "1,240"


def test_missing_column_names_the_columns_it_has():
    with pytest.raises(KeyError, match=r"has no 'fake' field .* its columns are qa, real_news"):
        from_upstream([{"real_news": "x", "qa": []}])


def test_offline_load_fails_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(ConnectionError, match="needs a network connection"):
        load_upstream("TaiMingLu/news-truthful")
