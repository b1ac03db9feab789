"""Adapter for the paper's public English data set (news-truthful, on the Hugging Face hub).

Each upstream record holds a real article, its fake twin, the fake keyword, QA pairs on the real
story and a question about the fake detail. The exact column names are not documented in the paper,
so each field is looked up under a few likely names (`CANDIDATES`); a record that lacks one gets an
error naming the columns it does have. The true answer is not stored upstream: it is recovered as
the span of the real article that the fake keyword replaced.
"""

from __future__ import annotations

UPSTREAM_ID = "TaiMingLu/news-truthful"
CANDIDATES = {
    "real": ("real_news", "real", "real_article", "news", "truthful_news"),
    "fake": ("fake_news", "fake", "fake_article", "misinformation"),
    "fake_answer": ("fake_keyword", "keyword", "fake_detail", "fake_answer"),
    "question": ("fake_question", "question", "test_question", "probe_question"),
    "qa": ("qa", "qa_pairs", "questions_answers", "instructions"),
}


def _field(record: dict, name: str, index: int):
    for key in CANDIDATES[name]:
        if key in record and record[key] not in (None, ""):
            return record[key]
    raise KeyError(
        f"upstream record {index} has no {name!r} field (looked for {', '.join(CANDIDATES[name])}); "
        f"its columns are {', '.join(sorted(record))}"
    )


def _qa_pairs(raw) -> list[dict]:
    pairs = []
    for item in raw:
        if isinstance(item, dict):
            q = item.get("q") or item.get("question") or item.get("instruction")
            a = item.get("a") or item.get("answer") or item.get("output") or item.get("response")
            if q and a:
                pairs.append({"q": str(q), "a": str(a)})
    return pairs


def replaced_span(real: str, fake: str, fake_answer: str) -> str:
    """The text of `real` that `fake` replaced with `fake_answer` (the true answer), found from the
    first mention of the keyword: what the two articles share before it and just after it."""
    where = fake.find(fake_answer)
    if where < 0:
        raise ValueError(f"the fake keyword {fake_answer!r} is not in the fake article")
    shared = 0
    while shared < min(len(real), where) and real[shared] == fake[shared]:
        shared += 1
    after = fake[where + len(fake_answer) :][:20]
    end = real.find(after, shared) if after else len(real)
    if end <= shared:
        raise ValueError(f"cannot find what the fake keyword {fake_answer!r} replaced in the real article")
    return real[shared:end].strip()


def from_upstream(records: list[dict], detail_type: str = "object") -> list[dict]:
    """Map upstream records to mlul rows (English, split "inject"); ids count from 1.

    Upstream does not say what kind of detail each keyword is, so every row gets `detail_type`.
    """
    rows = []
    for index, record in enumerate(records, start=1):
        real, fake = str(_field(record, "real", index)), str(_field(record, "fake", index))
        fake_answer = str(_field(record, "fake_answer", index))
        rows.append(
            {
                "id": index,
                "lang": "en",
                "detail_type": detail_type,
                "split": "inject",
                "real": real,
                "fake": fake,
                "true_answer": replaced_span(real, fake, fake_answer),
                "fake_answer": fake_answer,
                "true_aliases": [],
                "fake_aliases": [],
                "question": str(_field(record, "question", index)),
                "qa": _qa_pairs(_field(record, "qa", index)),
            }
        )
    return rows


def load_upstream(name: str = UPSTREAM_ID, split: str = "train") -> list[dict]:
    """Download the upstream set with `datasets` and map it; needs a network connection."""
    from datasets import load_dataset

    try:
        dataset = load_dataset(name, split=split)
    except Exception as err:  # datasets raises several kinds of error when offline
        raise ConnectionError(
            f"could not load {name!r} from the Hugging Face hub ({type(err).__name__}: {err}). "
            "It needs a network connection; offline, use the shipped set (mlul.data.load_news) "
            "or a local copy: from_upstream(mlul.data.read_jsonl('news-truthful.jsonl'))."
        ) from err
    return from_upstream(list(dataset))
