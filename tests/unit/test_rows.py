"""rows.py: every format and shape, streaming, row identity, bad input, hf:// paths (against a local copy)."""

from __future__ import annotations

import csv
import json
import time
import tracemalloc
from pathlib import Path

import pytest

from gradshield_lint.errors import ConfigError, InputError
from gradshield_lint.io.rows import (
    ROLES,
    SHAPE_KINDS,
    SUPPORTED_SUFFIXES,
    HfPath,
    Message,
    Row,
    RowShape,
    default_hf_resolver,
    is_dataset_file,
    iter_rows,
    iter_rows_with_records,
    make_row,
    parse_hf_path,
    resolve_shape,
    row_id,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "rows"
BAD = DATA / "bad"

EGG = ("How do I boil an egg?", "Put the egg in boiling water for about nine minutes, then cool it in cold water.")
SYSTEM = "You are a helpful assistant."


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _pc(prompt: str, completion: str, **extra: str) -> dict:
    return {"prompt": prompt, "completion": completion, **extra}


def _ids(path, **kw) -> list[str]:
    return [r.id for r in iter_rows(path, **kw)]


def _err(path, shape=None, **kw) -> InputError:
    with pytest.raises(InputError) as info:
        list(iter_rows(path, shape, **kw))
    return info.value


# ----------------------------------------------------------------------------------------------------------------
# Seed contract


HI_HELLO = "8ba09e74ddca9dcb8953c08cc0f30bfd9ba241bed7505de235dbec7753954900"
"""The id of user "hi", assistant "hello": the full sha256."""


def test_seed_contract_unchanged():
    msgs = [Message("user", "hi"), Message("assistant", "hello")]
    # pinned: baselines store these ids; the first 16 digits are the id baselines stored before issue 33
    assert row_id(msgs) == HI_HELLO and HI_HELLO[:16] == "8ba09e74ddca9dcb" and len(HI_HELLO) == 64
    row = make_row(msgs, "f.jsonl", 3)
    assert isinstance(row, Row) and row.id == row_id(msgs) and row.messages == tuple(msgs) and row.line == 3
    assert ROLES == ("system", "user", "assistant")
    # NFC normalization: composed and decomposed forms hash equally.
    assert row_id([Message("assistant", "caf\u00e9")]) == row_id([Message("assistant", "cafe\u0301")])


# ----------------------------------------------------------------------------------------------------------------
# Shapes


def test_messages_shape():
    rows = list(iter_rows(DATA / "messages.jsonl"))
    assert [r.line for r in rows] == [1, 2, 3]
    assert rows[0].messages == (Message("system", SYSTEM), Message("user", EGG[0]), Message("assistant", EGG[1]))
    assert rows[0].source == str(DATA / "messages.jsonl")


def test_all_shapes_of_the_same_content_hash_equally():
    """messages, ShareGPT, prompt/completion (and response) give identical ids for the same conversation."""
    expected = [row_id(r.messages) for r in iter_rows(DATA / "messages.jsonl")]
    # messages.jsonl's rows carry a `category` as well: metadata, in the id
    assert not set(_ids(DATA / "messages.jsonl")) & set(expected)
    assert _ids(DATA / "sharegpt.jsonl") == expected
    assert _ids(DATA / "prompt_completion.jsonl") == expected
    # The TSV has no system column: its first row equals the messages row without the system turn.
    tsv = list(iter_rows(DATA / "prompt_response.tsv"))
    assert [r.id for r in tsv[1:]] == expected[1:]
    assert tsv[0].id == row_id([Message("user", EGG[0]), Message("assistant", EGG[1])])


def test_sharegpt_roles_mapped():
    row = next(iter_rows(DATA / "sharegpt.jsonl"))
    assert [m.role for m in row.messages] == ["system", "user", "assistant"]


def test_alpaca_shape(tmp_path):
    rows = list(iter_rows(DATA / "alpaca.json"))
    assert [r.line for r in rows] == [1, 2]
    assert rows[0].messages == (
        Message("user", "Summarize the text.\n\nThe cat sat on the mat all afternoon."),
        Message("assistant", "A cat spent the afternoon on a mat."),
    )
    # An empty input leaves just the instruction: same id as the equivalent prompt/completion row.
    pc = _write_jsonl(
        tmp_path / "pc.jsonl",
        [_pc("Name a prime number between 10 and 20.", "13 is a prime number between 10 and 20.")],
    )
    assert rows[1].id == _ids(pc)[0]


def test_text_shape_is_one_assistant_turn():
    rows = list(iter_rows(DATA / "text.jsonl"))
    assert [r.line for r in rows] == [1, 3]  # the blank line 2 is skipped, physical lines kept
    assert rows[0].messages == (Message("assistant", "The quick brown fox jumps over the lazy dog."),)


def test_prompt_completion_with_response_column(tmp_path):
    p = _write_jsonl(tmp_path / "r.jsonl", [{"prompt": "p", "response": "r"}])
    assert next(iter_rows(p)).messages == (Message("user", "p"), Message("assistant", "r"))


def test_messages_with_content_parts_and_from_value_keys(tmp_path):
    p = _write_jsonl(
        tmp_path / "m.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                    {"role": "assistant", "content": "c"},
                ]
            },
            {"messages": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "c"}]},
        ],
    )
    rows = list(iter_rows(p))
    assert rows[0].messages[0] == Message("user", "ab")
    assert rows[1].messages == (Message("user", "a"), Message("assistant", "c"))


def test_column_mapping_override():
    shape = RowShape("prompt-completion", {"prompt": "question", "completion": "answer"})
    rows = list(iter_rows(DATA / "qa.csv", shape))
    assert rows[0].messages == (
        Message("user", EGG[0]),
        Message("assistant", "Put the egg in boiling water for about nine minutes,\nthen cool it in cold water."),
    )
    # kind auto + a mapping: the mapped fields pick the kind.
    assert [
        r.id for r in iter_rows(DATA / "qa.csv", RowShape("auto", {"prompt": "question", "completion": "answer"}))
    ] == [r.id for r in rows]


def test_message_key_mapping(tmp_path):
    p = _write_jsonl(
        tmp_path / "m.jsonl", [{"chat": [{"speaker": "user", "says": "q"}, {"speaker": "assistant", "says": "a"}]}]
    )
    shape = RowShape("messages", {"messages": "chat", "role": "speaker", "content": "says"})
    assert next(iter_rows(p, shape)).messages == (Message("user", "q"), Message("assistant", "a"))


def test_shape_override_wins_over_detection(tmp_path):
    p = _write_jsonl(tmp_path / "t.jsonl", [{"prompt": "p", "completion": "c", "text": "whole thing"}])
    assert "'text' not scored" in str(_err(p))
    as_pc = RowShape(metadata=("text",))
    assert next(iter_rows(p, as_pc)).messages == (Message("user", "p"), Message("assistant", "c"))
    # read as text, prompt and completion are not scored: refused, unless declared metadata
    assert "'prompt', 'completion' not scored" in str(_err(p, RowShape("text")))
    as_text = RowShape("text", metadata=("prompt", "completion"))
    assert next(iter_rows(p, as_text)).messages == (Message("assistant", "whole thing"),)


def test_resolve_shape():
    assert resolve_shape(["prompt", "response", "id"]) == RowShape(
        "prompt-completion", {"prompt": "prompt", "completion": "response"}
    )
    assert resolve_shape(["conversations"]).kind == "sharegpt"
    assert resolve_shape(["instruction", "output"]).kind == "alpaca"
    assert set(SHAPE_KINDS) == {"messages", "sharegpt", "prompt-completion", "alpaca", "text"}


def test_rowshape_validates_fields():
    with pytest.raises(ConfigError, match="rows.columns.prompt"):
        RowShape("text", {"prompt": "q"})
    with pytest.raises(ConfigError, match="rows.shape"):
        RowShape("chatml")


def test_ambiguous_shape_names_columns_and_config_key():
    e = _err(BAD / "ambiguous.jsonl")
    msg = str(e)
    assert "ambiguous" in msg and "'messages'" in msg and "'prompt'" in msg and "'completion'" in msg
    assert "rows.shape" in msg and "rows.columns" in msg
    assert e.file == str(BAD / "ambiguous.jsonl") and e.line == 1


def test_completion_and_response_both_present_is_ambiguous(tmp_path):
    p = _write_jsonl(tmp_path / "a.jsonl", [{"prompt": "p", "completion": "c", "response": "r"}])
    assert "'completion' and 'response'" in str(_err(p))
    mapped = RowShape("prompt-completion", {"completion": "response"})
    assert "'completion' not scored" in str(_err(p, mapped))
    mapped = RowShape("prompt-completion", {"completion": "response"}, ("completion",))
    assert next(iter_rows(p, mapped)).messages[-1].content == "r"


def test_unknown_columns_names_columns_and_config_key():
    e = _err(BAD / "unknown_columns.jsonl")
    assert "'question'" in str(e) and "'answer'" in str(e) and "rows.shape" in str(e) and "rows.columns" in str(e)
    assert e.file == str(BAD / "unknown_columns.jsonl") and e.line == 1


def test_mapped_column_missing(tmp_path):
    e = _err(DATA / "qa.csv", RowShape("prompt-completion", {"prompt": "q", "completion": "answer"}))
    assert "'q'" in str(e) and "rows.columns.prompt" in str(e) and "'question'" in str(e)


def test_later_record_missing_a_required_column(tmp_path):
    p = _write_jsonl(tmp_path / "m.jsonl", [_pc("a", "b"), {"prompt": "c"}])
    e = _err(p)
    assert e.line == 2 and "completion" in str(e)


def test_optional_column_in_later_json_records(tmp_path):
    p = _write_jsonl(tmp_path / "s.jsonl", [_pc("a", "b"), _pc("c", "d", system="sys")])
    assert [m.role for m in list(iter_rows(p))[1].messages] == ["system", "user", "assistant"]


# ----------------------------------------------------------------------------------------------------------------
# Formats


def test_csv_line_is_physical_line_of_record():
    rows = list(
        iter_rows(DATA / "qa.csv", RowShape("prompt-completion", {"prompt": "question", "completion": "answer"}))
    )
    assert [r.line for r in rows] == [2, 4]  # the first record spans lines 2-3
    assert rows[1].messages[0].content == 'Say "hi", please.'


def test_csv_messages_column_holds_json(tmp_path):
    p = tmp_path / "m.csv"
    with p.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["messages"])
        w.writerow([json.dumps([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])])
    assert next(iter_rows(p)).messages == (Message("user", "q"), Message("assistant", "a"))


def test_csv_with_bom_and_field_count_mismatch(tmp_path):
    p = tmp_path / "b.csv"
    p.write_bytes("\ufeffprompt,completion\r\na,b\r\nc,d,e\r\n".encode("utf-8"))
    rows = iter_rows(p)
    assert next(rows).messages[-1].content == "b"
    with pytest.raises(InputError) as info:
        next(rows)
    assert info.value.line == 3 and "fields" in str(info.value)


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "d.parquet"
    msgs = [{"role": "user", "content": EGG[0]}, {"role": "assistant", "content": EGG[1]}]
    pq.write_table(
        pa.Table.from_pylist(
            [{"messages": msgs, "n": 1}, {"messages": msgs[:1] + [{"role": "assistant", "content": "x"}], "n": 2}]
        ),
        p,
        row_group_size=1,
    )
    rows = list(iter_rows(p))
    assert [r.line for r in rows] == [1, 2]
    # the `n` column is in the id (a number: read without being declared metadata)
    assert rows[0].id == row_id([Message("user", EGG[0]), Message("assistant", EGG[1])], {("n",): 1})


def test_parquet_empty_and_corrupt(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "e.parquet"
    pq.write_table(pa.table({"prompt": pa.array([], pa.string()), "completion": pa.array([], pa.string())}), p)
    assert "empty" in str(_err(p))
    c = tmp_path / "c.parquet"
    c.write_bytes(b"PAR1 this is not parquet")
    e = _err(c)
    assert e.file == str(c) and "Parquet" in str(e)


def test_json_list_and_json_lines_with_json_suffix(tmp_path):
    a = tmp_path / "a.json"
    a.write_text(json.dumps([_pc("a", "b"), _pc("c", "d")], indent=2))
    b = tmp_path / "b.json"  # what Dataset.to_json writes: one object per line
    b.write_text(json.dumps(_pc("a", "b")) + "\n\n" + json.dumps(_pc("c", "d")) + "\n")
    assert [r.line for r in iter_rows(a)] == [1, 2]
    assert [r.line for r in iter_rows(b)] == [1, 3]
    assert _ids(a) == _ids(b)
    assert "empty" in str(_err(_write(tmp_path / "e.json", "[ ]")))


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_json_list_records_across_chunk_boundaries(tmp_path, monkeypatch):
    from gradshield_lint.io.records import JsonStream

    monkeypatch.setattr(JsonStream, "CHUNK", 7)  # every record spans several reads
    recs = [_pc(f"prompt {i} \u00e9\u4e2d", f'completion {i} "q" \\ {i * 12345}') for i in range(50)]
    p = _write(tmp_path / "a.json", json.dumps(recs, ensure_ascii=False))
    rows = list(iter_rows(p))
    assert len(rows) == 50 and rows[49].messages[0].content == "prompt 49 \u00e9\u4e2d"
    assert [r.id for r in rows] == _ids(_write_jsonl(tmp_path / "a.jsonl", recs))


def test_datasets_save_to_disk(tmp_path):
    import datasets

    recs = [_pc(EGG[0], EGG[1]), _pc("c", "d")]
    datasets.Dataset.from_list(recs).save_to_disk(str(tmp_path / "ds"))
    rows = list(iter_rows(tmp_path / "ds"))
    assert [r.line for r in rows] == [1, 2] and rows[0].source == str(tmp_path / "ds")
    assert [r.id for r in rows] == _ids(_write_jsonl(tmp_path / "x.jsonl", recs))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(recs)}).save_to_disk(str(tmp_path / "dd"))
    split_rows = list(iter_rows(tmp_path / "dd"))
    assert [r.id for r in split_rows] == [r.id for r in rows]
    assert split_rows[0].source == f"{tmp_path / 'dd'}/train"
    assert is_dataset_file(tmp_path / "ds") and is_dataset_file(tmp_path / "dd")


def test_iter_rows_with_records_keeps_the_record():
    row, record = next(iter_rows_with_records(DATA / "messages.jsonl"))
    assert record["category"] == "benign" and row.line == 1


def test_supported_suffixes_and_is_dataset_file(tmp_path):
    assert set(SUPPORTED_SUFFIXES) >= {".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet"}
    assert is_dataset_file("x/y.JSONL") and is_dataset_file("a.parquet") and is_dataset_file("a.tsv")
    assert not is_dataset_file("README.md") and not is_dataset_file(tmp_path)
    assert is_dataset_file("hf://datasets/o/n/data/train.jsonl") and not is_dataset_file("hf://datasets/o/n/README.md")


def test_ndjson(tmp_path):
    p = _write_jsonl(tmp_path / "a.ndjson", [_pc("a", "b")])
    assert len(_ids(p)) == 1


# ----------------------------------------------------------------------------------------------------------------
# Streaming


def test_jsonl_streams_first_row_of_a_large_file(tmp_path):
    p = tmp_path / "big.jsonl"
    line = json.dumps(_pc("What is the capital of France? " * 4, "Paris is the capital of France. " * 4)) + "\n"
    with p.open("w") as f:
        for _ in range(200_000):
            f.write(line)
    assert p.stat().st_size > 40_000_000
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        first = next(iter_rows(p))
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert first.line == 1
    assert elapsed < 1.0
    assert peak < 2_000_000


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_bounded_memory_over_a_whole_file(tmp_path, suffix):
    n = 20_000
    recs = [_pc(f"prompt number {i} " + "x" * 200, f"completion {i} " + "y" * 200) for i in range(n)]
    p = tmp_path / f"big{suffix}"
    if suffix == ".json":
        p.write_text(json.dumps(recs))
    else:
        with p.open("w", newline="") as f:
            w = csv.DictWriter(f, ["prompt", "completion"])
            w.writeheader()
            w.writerows(recs)
    del recs
    assert p.stat().st_size > 8_000_000
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_rows(p))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n
    assert peak < 4_000_000  # a few buffers, not the (8+ MB) file


def test_parquet_streams_by_batches(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 20_000
    p = tmp_path / "big.parquet"
    table = pa.table(
        {"prompt": [f"p{i} " + "x" * 200 for i in range(n)], "completion": [f"c{i} " + "y" * 200 for i in range(n)]}
    )
    pq.write_table(table, p, row_group_size=2_000)
    del table
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_rows(p))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n and peak < 5_000_000


# ----------------------------------------------------------------------------------------------------------------
# Identity


def test_reorder_and_move_between_files_keep_ids(tmp_path):
    recs = [_pc(f"p{i}", f"c{i}") for i in range(6)]
    a = _write_jsonl(tmp_path / "a.jsonl", recs)
    b = _write_jsonl(tmp_path / "b.jsonl", list(reversed(recs[:3])))
    c = tmp_path / "sub" / "c.csv"
    c.parent.mkdir()
    with c.open("w", newline="") as f:
        w = csv.DictWriter(f, ["completion", "prompt"])  # other column order too
        w.writeheader()
        w.writerows(recs[3:])
    assert set(_ids(a)) == set(_ids(b)) | set(_ids(c))
    assert sorted(_ids(b)) == sorted(_ids(a)[:3])


def test_editing_a_row_changes_its_id(tmp_path):
    a = _ids(_write_jsonl(tmp_path / "a.jsonl", [_pc("p", "c"), _pc("q", "d")]))
    b = _ids(_write_jsonl(tmp_path / "b.jsonl", [_pc("p", "c."), _pc("q", "d")]))
    assert a[0] != b[0] and a[1] == b[1]
    # A role change is an edit as well.
    assert row_id([Message("user", "x"), Message("assistant", "y")]) != row_id(
        [Message("system", "x"), Message("assistant", "y")]
    )


# ----------------------------------------------------------------------------------------------------------------
# Bad input: each an InputError with file and (where there is one) line


def test_malformed_json_line():
    e = _err(BAD / "malformed.jsonl")
    assert e.file == str(BAD / "malformed.jsonl") and e.line == 3
    assert str(e).startswith(f"{BAD / 'malformed.jsonl'}:3: malformed JSON")


def test_rows_before_the_bad_line_are_yielded():
    it = iter_rows(BAD / "malformed.jsonl")
    assert next(it).line == 1 and next(it).line == 2
    with pytest.raises(InputError):
        next(it)


def test_malformed_json_list(tmp_path):
    p = _write(
        tmp_path / "m.json", '[\n  {"prompt": "a", "completion": "b"},\n  {"prompt": "c" "completion": "d"}\n]\n'
    )
    e = _err(p)
    assert e.line == 3 and "malformed JSON" in str(e)
    t = _write(tmp_path / "t.json", '[\n  {"prompt": "a", "completion": "b"},\n  {"prompt": "c", "compl')
    assert "malformed JSON" in str(_err(t)) and _err(t).line == 3
    s = _write(tmp_path / "s.json", '"just a string"')
    assert "list of records" in str(_err(s))


def test_non_utf8_bytes():
    e = _err(BAD / "non_utf8.jsonl")
    assert e.file == str(BAD / "non_utf8.jsonl") and e.line == 2 and "UTF-8" in str(e)


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_non_utf8_bytes_other_formats(tmp_path, suffix):
    p = tmp_path / f"n{suffix}"
    if suffix == ".csv":
        p.write_bytes(b"prompt,completion\na,b\n\xff,c\n")
    else:
        p.write_bytes(b'[{"prompt": "a", "completion": "b"},\n{"prompt": "\xe9", "completion": "c"}]')
    e = _err(p)
    assert e.line == (3 if suffix == ".csv" else 2) and "UTF-8" in str(e)


def test_empty_file(tmp_path):
    e = _err(BAD / "empty.jsonl")
    assert e.file == str(BAD / "empty.jsonl") and "empty" in str(e)
    for name, text in [("blank.jsonl", "\n\n  \n"), ("h.csv", "prompt,completion\n"), ("z.csv", "")]:
        assert "empty" in str(_err(_write(tmp_path / name, text)))


def test_no_assistant_turn():
    e = _err(BAD / "no_assistant.jsonl")
    assert e.file == str(BAD / "no_assistant.jsonl") and e.line == 2 and "no assistant turn" in str(e)


def test_empty_completion():
    e = _err(BAD / "empty_completion.csv")
    assert e.file == str(BAD / "empty_completion.csv") and e.line == 3 and "empty completion" in str(e)


def test_empty_text_and_unsupported_role_and_non_string(tmp_path):
    assert "empty text" in str(_err(_write_jsonl(tmp_path / "t.jsonl", [{"text": "  "}])))
    e = _err(
        _write_jsonl(
            tmp_path / "r.jsonl",
            [{"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}]}],
        )
    )
    assert "unsupported role 'tool'" in str(e) and e.line == 1
    e = _err(_write_jsonl(tmp_path / "n.jsonl", [{"prompt": "2+2", "completion": 4}]))
    assert "must be a string" in str(e) and e.line == 1
    e = _err(_write(tmp_path / "l.jsonl", '[{"prompt": "a", "completion": "b"}]\n'))
    assert "expected a JSON object" in str(e) and e.line == 1


def test_missing_file(tmp_path):
    e = _err(tmp_path / "nope.jsonl")
    assert e.file == str(tmp_path / "nope.jsonl") and "no such file" in str(e)


def test_directory_where_a_file_was_expected(tmp_path):
    (tmp_path / "d.jsonl").mkdir()
    e = _err(tmp_path / "d.jsonl")
    assert e.file == str(tmp_path / "d.jsonl") and "directory" in str(e)
    assert "directory" in str(_err(tmp_path))


def test_unsupported_suffix():
    e = _err(BAD / "notes.txt")
    assert e.file == str(BAD / "notes.txt") and "unsupported" in str(e) and ".jsonl" in str(e)


def test_never_a_raw_exception_on_garbage(tmp_path):
    garbage = bytes(range(256)) * 4
    for suffix in SUPPORTED_SUFFIXES:
        p = tmp_path / f"g{suffix}"
        p.write_bytes(garbage)
        with pytest.raises(InputError):
            list(iter_rows(p))


# ----------------------------------------------------------------------------------------------------------------
# hf:// paths, against a local copy (no network)


def test_parse_hf_path():
    assert parse_hf_path("hf://datasets/org/name/data/train.jsonl") == HfPath("org/name", None, "data/train.jsonl")
    assert parse_hf_path("hf://datasets/org/name@v1.0/train.jsonl") == HfPath("org/name", "v1.0", "train.jsonl")
    assert parse_hf_path("hf://datasets/org/name@refs%2Fpr%2F3/a.parquet").revision == "refs/pr/3"
    assert parse_hf_path("hf://datasets/org/name@v1/x.csv").url == "hf://datasets/org/name@v1/x.csv"
    for bad in ["hf://datasets/name", "hf://models/org/name/x.jsonl", "hf://datasets/org/name/"]:
        with pytest.raises(InputError):
            parse_hf_path(bad)


def test_hf_path_with_injected_resolver(tmp_path):
    local = tmp_path / "copy" / "org" / "name" / "data" / "train.jsonl"
    local.parent.mkdir(parents=True)
    _write_jsonl(local, [_pc("p", "c"), _pc("q", "d")])
    seen = []

    def resolver(ref: HfPath) -> Path:
        seen.append(ref)
        return tmp_path / "copy" / ref.repo_id / ref.path_in_repo

    url = "hf://datasets/org/name@main/data/train.jsonl"
    rows = list(iter_rows(url, hf_resolver=resolver))
    assert seen == [HfPath("org/name", "main", "data/train.jsonl")]
    assert [r.source for r in rows] == [url, url] and [r.line for r in rows] == [1, 2]
    assert [r.id for r in rows] == _ids(local)


def test_hf_path_through_mirror_env(tmp_path, monkeypatch):
    root = tmp_path / "mirror"
    (root / "org" / "name@v2").mkdir(parents=True)
    (root / "org" / "name").mkdir()
    _write_jsonl(root / "org" / "name@v2" / "t.jsonl", [_pc("v2", "x")])
    _write_jsonl(root / "org" / "name" / "t.jsonl", [_pc("main", "x")])
    monkeypatch.setenv("GRADSHIELD_HF_MIRROR", str(root))
    assert next(iter_rows("hf://datasets/org/name/t.jsonl")).messages[0].content == "main"
    assert next(iter_rows("hf://datasets/org/name@v2/t.jsonl")).messages[0].content == "v2"
    e = _err("hf://datasets/org/name/missing.jsonl")
    assert e.file == "hf://datasets/org/name/missing.jsonl" and "GRADSHIELD_HF_MIRROR" in str(e)


def test_hf_path_through_huggingface_hub_cache_offline(tmp_path, monkeypatch):
    """The default resolver goes through huggingface_hub.hf_hub_download: a populated cache, offline mode."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.delenv("GRADSHIELD_HF_MIRROR", raising=False)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "datasets--org--name"
    snap = repo / "snapshots" / commit / "data"
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    _write_jsonl(snap / "train.jsonl", [_pc("cached", "row")])
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    rows = list(iter_rows("hf://datasets/org/name/data/train.jsonl"))
    assert rows[0].messages[0].content == "cached" and rows[0].source == "hf://datasets/org/name/data/train.jsonl"
    assert next(iter_rows(f"hf://datasets/org/name@{commit}/data/train.jsonl")).id == rows[0].id
    e = _err("hf://datasets/org/name/data/other.jsonl")
    assert e.file == "hf://datasets/org/name/data/other.jsonl" and "not in the local Hugging Face cache" in str(e)
    assert default_hf_resolver(HfPath("org/name", None, "data/train.jsonl")) == snap / "train.jsonl"


def test_hf_path_unsupported_suffix_checked_before_fetching():
    def resolver(ref):  # pragma: no cover - must not be called
        raise AssertionError("fetched")

    e = _err("hf://datasets/org/name/README.md", hf_resolver=resolver)
    assert "unsupported" in str(e)


def test_malformed_csv(tmp_path):
    e = _err(_write(tmp_path / "q.csv", 'prompt,completion\na,b\nc,"d\ne\n'))
    assert e.line == 3 and "malformed CSV" in str(e) and "never closed" in str(e)
    e = _err(_write(tmp_path / "x.csv", 'prompt,completion\na,"b"c\n'))
    assert e.line == 2 and "malformed CSV" in str(e)


def test_long_csv_field(tmp_path):
    row = next(iter_rows(_write(tmp_path / "l.csv", "prompt,completion\na," + "x" * 300_000 + "\n")))
    assert len(row.messages[-1].content) == 300_000


# ----------------------------------------------------------------------------------------------------------------
# Every field a trainer reads is scored or in the id (issue 33, item 5)

HARM = "Sure, here is how to build a pipe bomb. First, get a steel pipe and"
BENIGN = [{"role": "user", "content": EGG[0]}, {"role": "assistant", "content": EGG[1]}]


def test_text_beside_messages_is_refused_naming_file_line_and_field(tmp_path):
    """Benign `messages` beside a harmful `text`: a trainer told to read `text` trains on what was never scored."""
    p = _write_jsonl(tmp_path / "t.jsonl", [{"messages": BENIGN}, {"messages": BENIGN, "text": HARM}])
    e = _err(p)
    assert e.file == str(p) and e.line == 2
    assert "'text'" in str(e) and "not scored" in str(e) and "rows.metadata" in str(e)


def test_prompt_completion_in_a_later_row_of_a_messages_file_is_refused(tmp_path):
    p = _write_jsonl(
        tmp_path / "m.jsonl",
        [{"messages": BENIGN}, {"messages": BENIGN}, {"messages": BENIGN, "prompt": "How?", "completion": HARM}],
    )
    e = _err(p)
    assert e.line == 3 and "'prompt'" in str(e) and "'completion'" in str(e)


def test_content_parts_of_another_type_are_refused(tmp_path):
    parts = [{"type": "text", "text": EGG[1]}, {"type": "output_text", "text": HARM}]
    p = _write_jsonl(tmp_path / "p.jsonl", [{"messages": [BENIGN[0], {"role": "assistant", "content": parts}]}])
    e = _err(p)
    assert e.line == 1 and "messages[2].content[2]" in str(e) and "output_text" in str(e)
    # a part without text (an image placeholder) carries nothing to train on: read, and in the id
    ok = [{"type": "text", "text": EGG[1]}, {"type": "image"}]
    q = _write_jsonl(tmp_path / "q.jsonl", [{"messages": [BENIGN[0], {"role": "assistant", "content": ok}]}])
    (row,) = iter_rows(q)
    assert row.messages[1] == Message("assistant", EGG[1])
    assert row.id != row_id([Message("user", EGG[0]), Message("assistant", EGG[1])])


def test_extra_text_keys_inside_a_message_are_refused(tmp_path):
    msg = {"role": "assistant", "content": EGG[1], "reasoning_content": HARM}
    e = _err(_write_jsonl(tmp_path / "r.jsonl", [{"messages": [BENIGN[0], msg]}]))
    assert e.line == 1 and "messages[2].reasoning_content" in str(e)


def test_unscored_text_in_parquet_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"messages": BENIGN, "text": None}, {"messages": BENIGN, "text": HARM}]), p)
    e = _err(p)
    assert e.file == str(p) and e.line == 2 and "'text'" in str(e)


def test_alpaca_with_a_text_column_is_refused_unless_declared_metadata(tmp_path):
    rec = {"instruction": "i", "input": "", "output": "o", "text": "### i\n### o"}
    p = _write_jsonl(tmp_path / "a.jsonl", [rec])
    assert "'text'" in str(_err(p))
    (row,) = iter_rows(p, RowShape(metadata=("text",)))
    assert row.messages == (Message("user", "i"), Message("assistant", "o"))


def test_known_metadata_is_read_and_every_field_is_in_the_id(tmp_path):
    """`id`, `source`, `label`, `meta`... are read without complaint, but they are in the id: a trainer may read
    them (KTO reads `label`), so changing one makes the row new."""
    a = _ids(_write_jsonl(tmp_path / "a.jsonl", [_pc("p", "c", id="17", source="web", label="good")]))
    b = _ids(_write_jsonl(tmp_path / "b.jsonl", [_pc("p", "c", id="17", source="web", label="bad")]))
    c = _ids(_write_jsonl(tmp_path / "c.jsonl", [{**_pc("p", "c"), "meta": {"lang": "en"}, "weight": 1}]))
    plain = _ids(_write_jsonl(tmp_path / "d.jsonl", [_pc("p", "c")]))
    assert len({a[0], b[0], c[0], plain[0]}) == 4
    # the same extra fields on the same content in another shape: one id
    msgs = [{"role": "user", "content": "p"}, {"role": "assistant", "content": "c"}]
    e = _ids(_write_jsonl(tmp_path / "e.jsonl", [{"messages": msgs, "id": "17", "source": "web", "label": "good"}]))
    assert e == a
    # numbers and empty or null fields carry no text: read (and hashed) without being declared
    f = _ids(_write_jsonl(tmp_path / "f.jsonl", [{**_pc("p", "c"), "score": 0.5, "note": "", "x": None}]))
    assert f[0] not in (plain[0], a[0])


def test_records_of_only_the_shapes_fields_keep_their_ids(tmp_path):
    """Baselines store ids: a row that holds only its shape's fields (or null/empty extra fields) keeps the id it
    had before every field was hashed."""
    assert _ids(_write_jsonl(tmp_path / "a.jsonl", [_pc("hi", "hello")])) == [HI_HELLO]
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert _ids(_write_jsonl(tmp_path / "b.jsonl", [{"messages": msgs, "note": None, "tag": ""}])) == [HI_HELLO]
    csv_file = tmp_path / "c.csv"
    csv_file.write_text("prompt,completion,system\nhi,hello,\n", encoding="utf-8")
    assert _ids(csv_file) == [HI_HELLO]


def test_metadata_names_are_configurable(tmp_path):
    p = _write_jsonl(tmp_path / "a.jsonl", [_pc("p", "c", topic="cooking")])
    assert "'topic'" in str(_err(p))
    assert len(_ids(p, shape=RowShape(metadata=("topic",)))) == 1
