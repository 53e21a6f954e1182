import json

import pytest

from core.data import datasets
from core.errors import UserError


def test_local_datasets_load_from_the_data_directory():
    gsm8k = datasets.gsm8k()
    assert len(gsm8k) == 1319 and gsm8k[0].task == "math" and gsm8k[0].gold_answer.isdigit()
    cnndm = datasets.cnndm()
    assert len(cnndm) == 250 and cnndm[0].task == "summarization" and cnndm[0].reference
    assert not cnndm[0].prompt.startswith("Summarize")  # the instruction is added apart from the content
    sharegpt = datasets.sharegpt()
    assert len(sharegpt) == 300 and all(s.prompt for s in sharegpt)
    assert datasets.sample_one("gsm8k", 3) == datasets.sample_one("gsm8k", 3)


def test_builtin_and_generated_sources_need_no_data_directory(monkeypatch):
    monkeypatch.delenv("COMPRESSLENS_DATA_DIR", raising=False)
    assert {s.task for s in datasets.builtin_samples()} == {"math", "summarization", "chat"}
    generated = datasets.load_source("mathgen")
    assert len(generated) == 500 and generated[0].gold_answer is not None
    with pytest.raises(UserError, match="offline"):
        datasets.gsm8k()
    with pytest.raises(UserError, match="COMPRESSLENS_DATA_DIR"):
        datasets.sharegpt()
    with pytest.raises(UserError, match="Unknown prompt source"):
        datasets.load_source("imdb")


def test_uploaded_tables_with_chosen_columns():
    rows = [{"q": "What is 2 + 2?", "a": "4", "key": "x1"}, {"q": "  ", "a": "", "key": "x2"},
            {"q": "Half of 10?", "a": "5", "key": "x3"}]
    jsonl = "\n".join(json.dumps(r) for r in rows).encode()
    samples = datasets.from_table(jsonl, "mine.jsonl", "q", task="math", id_column="key", gold_column="a")
    assert [(s.source_id, s.prompt, s.gold_answer) for s in samples] == [("x1", "What is 2 + 2?", "4"),
                                                                          ("x3", "Half of 10?", "5")]
    csv = b"text,summary\n\"Long article, with a comma.\",Short.\n"
    [sample] = datasets.from_table(csv, "news.csv", "text", task="summarization", reference_column="summary")
    assert sample.prompt == "Long article, with a comma." and sample.reference == "Short."
    with pytest.raises(UserError, match="no column 'body'; its columns are text, summary"):
        datasets.from_table(csv, "news.csv", "body")
    with pytest.raises(UserError, match="upload a .jsonl or .csv"):
        datasets.from_table(csv, "news.xlsx", "text")
    with pytest.raises(UserError, match="could not be read"):
        datasets.from_table(b"{not json", "bad.jsonl", "text")
