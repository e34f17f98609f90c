"""A table in, one request line per row out: what a user sees for each format, each option, each bad row."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from batchline.composition import validator_for
from batchline.datasets.errors import RowError, SpecError, TableReadError
from batchline.datasets.readers import MISSING, column_names, read_batches
from batchline.datasets.rendering import RequestRenderer, request_hash, route_value, table_lines
from batchline.datasets.spec import TableSpec, detect_format, spec_digest
from batchline.domain.request_line import ValidRequest
from batchline.settings import load_settings

MODEL = "gpt-4o-mini"

# Quoted commas, a quoted quote, embedded newlines (LF and CRLF), emoji, U+2028, empty cells, a header with spaces.
TRICKY_CSV = (
    "id,review text,stars,note\r\n"
    'a1,"Great, really great",5,\r\n'
    'a2,"Line one\nline two",4,"said ""wow"""\r\n'
    "a3,Ünïcødé café 😀,3,x\r\n"
    "a4,sep\u2028here,2,\r\n"
    "a5,,1,empty review\r\n"
    'a6,"multi\r\nCRLF",5,last\r\n'
)


def _lines(path: Path, spec: TableSpec) -> dict[int, bytes | RowError]:
    return dict(table_lines(path, spec))


def _requests(outcomes: dict[int, bytes | RowError]) -> dict[int, dict]:
    return {row: orjson.loads(line) for row, line in outcomes.items() if isinstance(line, bytes)}


def _user(request: dict) -> str:
    return request["body"]["messages"][-1]["content"]


@pytest.fixture
def tricky_csv(tmp_path: Path) -> Path:
    path = tmp_path / "feedback.csv"
    path.write_bytes(TRICKY_CSV.encode())
    return path


# ---------------------------------------------------------------- the spec


def test_a_spec_needs_exactly_one_of_prompt_and_embed_and_says_which_option():
    with pytest.raises(SpecError, match="--prompt.*--embed"):
        TableSpec(model=MODEL)
    with pytest.raises(SpecError, match="--prompt and --embed cannot be used together"):
        TableSpec(model=MODEL, prompt="{{ a }}", embed="a")
    with pytest.raises(SpecError, match="--schema applies to chat requests"):
        TableSpec(model=MODEL, embed="text", schema={"type": "object"})
    with pytest.raises(SpecError, match="--prompt is not a valid Jinja2 template"):
        TableSpec(model=MODEL, prompt="{{ review ")
    with pytest.raises(SpecError, match="--flatten .* needs --schema"):
        TableSpec(model=MODEL, prompt="{{ a }}", flatten=True)
    with pytest.raises(SpecError, match="--temperature"):
        TableSpec(model=MODEL, prompt="{{ a }}", temperature=3.0)
    assert issubclass(SpecError, ValueError)


def test_the_spec_digest_is_stable_and_changes_with_any_option():
    one = TableSpec(model=MODEL, prompt="{{ a }}", schema={"b": 1, "a": 2})
    same = TableSpec(model=MODEL, prompt="{{ a }}", schema={"a": 2, "b": 1})
    assert spec_digest(one) == spec_digest(same)
    assert len(spec_digest(one)) == 64
    assert spec_digest(one) != spec_digest(TableSpec(model=MODEL, prompt="{{ a }}!", schema={"a": 2, "b": 1}))


def test_the_format_comes_from_the_name_and_an_unknown_one_lists_the_accepted(tmp_path: Path):
    assert [detect_format(n) for n in ("a.csv", "B.TSV", "c.parquet", "d.pq", "e.jsonl", "f.ndjson")] == [
        "csv",
        "tsv",
        "parquet",
        "parquet",
        "jsonl",
        "jsonl",
    ]
    assert detect_format(str(tmp_path)) == "text"
    with pytest.raises(SpecError, match=r"\.csv.*\.parquet.*folder.*--input-format"):
        detect_format("data.xlsx")


# ---------------------------------------------------------------- the formats


def test_a_tricky_csv_keeps_every_cell_as_written(tricky_csv: Path):
    assert column_names(tricky_csv, "csv") == ["id", "review text", "stars", "note"]
    (batch,) = read_batches(tricky_csv, "csv")
    assert batch.first_row == 1 and batch.rows == 6 and batch.errors == ()
    assert batch.columns["review text"] == [
        "Great, really great",
        "Line one\nline two",
        "Ünïcødé café 😀",
        "sep\u2028here",
        None,
        "multi\r\nCRLF",
    ]
    assert batch.columns["note"] == [None, 'said "wow"', "x", None, "empty review", "last"]
    assert batch.columns["stars"][0] == "5"  # every column is text: no guessing of types


def test_every_csv_row_renders_and_the_lines_are_canonical(tricky_csv: Path):
    spec = TableSpec(model=MODEL, prompt='{{ row["review text"] }} ({{ stars }} stars)', id_column="id")
    outcomes = _lines(tricky_csv, spec)
    assert list(outcomes) == [1, 2, 3, 4, 5, 6]
    requests = _requests(outcomes)
    assert _user(requests[3]) == "Ünïcødé café 😀 (3 stars)"
    assert _user(requests[4]) == "sep\u2028here (2 stars)"
    assert _user(requests[5]) == " (1 stars)"  # an empty cell is the empty string
    for line in outcomes.values():
        assert isinstance(line, bytes)
        assert "\u2028".encode() not in line and b"\n" not in line and b"\r" not in line
    assert [r["custom_id"] for r in requests.values()] == ["a1", "a2", "a3", "a4", "a5", "a6"]


def test_the_planner_accepts_every_rendered_line(tricky_csv: Path):
    validator = validator_for(load_settings())
    spec = TableSpec(model=MODEL, prompt='{{ row["review text"] }}', system="Label it.", max_tokens=5)
    for row, line in table_lines(tricky_csv, spec):
        if isinstance(line, bytes):
            assert isinstance(validator.validate(row, line), ValidRequest)


def test_a_row_whose_template_fails_is_reported_by_number_and_column_and_the_others_render(tricky_csv: Path):
    spec = TableSpec(model=MODEL, prompt='{{ row["review text"].strip() }}', id_column="id")
    outcomes = _lines(tricky_csv, spec)
    error = outcomes[5]
    assert isinstance(error, RowError)
    assert (error.row, error.column) == (5, "review text")
    assert str(error) == "row 5: the --prompt template failed: 'None' has no attribute 'strip'"
    assert sorted(_requests(outcomes)) == [1, 2, 3, 4, 6]


def test_an_empty_cell_alone_in_the_template_is_a_row_error_naming_the_column(tricky_csv: Path):
    outcomes = _lines(tricky_csv, TableSpec(model=MODEL, prompt="{{ note }}"))
    assert [row for row, line in outcomes.items() if isinstance(line, RowError)] == [1, 4]
    assert str(outcomes[1]) == "row 1: the --prompt template gave only white space: `note` is empty in this row"
    assert outcomes[1].column == "note"


def test_a_name_that_is_not_a_column_says_which_and_lists_the_columns(tricky_csv: Path):
    spec = TableSpec(model=MODEL, prompt="Review: {{ reviw }}")
    renderer = RequestRenderer(spec, column_names(tricky_csv, "csv"))
    assert renderer.unknown_names == ["reviw"]
    outcomes = _lines(tricky_csv, spec)
    assert str(outcomes[2]) == (
        "row 2: the --prompt template uses `{{ reviw }}`, which is not a column (columns: id, review text, stars, note)"
    )
    assert all(isinstance(line, RowError) for line in outcomes.values())


def test_a_ragged_csv_row_is_an_error_naming_the_file_and_row_and_reading_goes_on(tmp_path: Path):
    path = tmp_path / "ragged.csv"
    path.write_text('id,text\n1,one\n2,two,extra\n3,"three\nlines"\n4\n5,five\n')
    outcomes = _lines(path, TableSpec(model=MODEL, prompt="{{ text }}", id_column="id"))
    assert sorted(_requests(outcomes)) == [1, 3, 5]
    assert str(outcomes[2]) == "row 2: ragged.csv: 3 cells where the header has 2 (row skipped): '2,two,extra'"
    assert str(outcomes[4]).startswith("row 4: ragged.csv: 1 cells where the header has 2")
    assert _user(_requests(outcomes)[5]) == "five"


def test_bytes_that_are_not_utf8_stop_the_file_with_its_name(tmp_path: Path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("id,text\n1,ok\n2,café\n".encode("latin-1"))
    with pytest.raises(TableReadError, match=r"latin1.csv: cannot be read as CSV .*invalid UTF8"):
        list(table_lines(path, TableSpec(model=MODEL, prompt="{{ text }}")))


def test_a_quote_never_closed_runs_to_the_end_of_the_file_as_rfc_4180_readers_do(tmp_path: Path):
    path = tmp_path / "open-quote.csv"
    path.write_text('id,text\n1,"never closed\n2,two\n')
    requests = _requests(_lines(path, TableSpec(model=MODEL, prompt="{{ text }}")))
    assert [_user(r) for r in requests.values()] == ["never closed\n2,two\n"]


def test_a_tsv_reads_like_a_csv_with_tabs(tmp_path: Path):
    path = tmp_path / "data.tsv"
    path.write_text('id\ttext\n1\thas, commas\n2\t"quoted\ttab"\n')
    requests = _requests(_lines(path, TableSpec(model=MODEL, prompt="{{ text }}", id_column="id")))
    assert [_user(r) for r in requests.values()] == ["has, commas", "quoted\ttab"]


def test_parquet_rows_keep_their_types_and_ids_may_be_numbers(tmp_path: Path):
    path = tmp_path / "data.parquet"
    table = pa.table({"id": [10, 11, 12], "text": ["ok", None, "fine"], "score": [0.5, 1.0, None]})
    pq.write_table(table, path, row_group_size=2)
    batches = list(read_batches(path, "parquet", batch_rows=2))
    assert [b.first_row for b in batches] == [1, 3]
    spec = TableSpec(model=MODEL, prompt="{{ text }} {{ score }}", id_column="id")
    requests = _requests(_lines(path, spec))
    assert [r["custom_id"] for r in requests.values()] == ["10", "11", "12"]
    assert [_user(r) for r in requests.values()] == ["ok 0.5", " 1.0", "fine "]


def test_jsonl_records_a_bad_line_and_a_missing_key_fail_their_rows_alone(tmp_path: Path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"id": "r1", "text": "one"}\n\n[1, 2]\n{"id": "r3"}\nnot json\n{"id": "r5", "text": "five"}\n')
    assert column_names(path, "jsonl") == ["id", "text"]
    outcomes = _lines(path, TableSpec(model=MODEL, prompt="Say: {{ text }}", id_column="id"))
    assert sorted(_requests(outcomes)) == [1, 5]
    assert str(outcomes[2]) == "row 2: records.jsonl line 3 is a JSON array, not an object of columns"
    assert str(outcomes[3]) == "row 3: the --prompt template uses `{{ text }}`, which this row does not have"
    assert str(outcomes[4]).startswith("row 4: records.jsonl line 5 is not JSON")
    batch = next(read_batches(path, "jsonl"))
    assert batch.columns["text"][2] is MISSING


def test_a_jsonl_template_may_test_for_an_optional_key(tmp_path: Path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"text": "one", "note": "n"}\n{"text": "two"}\n')
    spec = TableSpec(model=MODEL, prompt="{{ text }}{% if note is defined %} ({{ note }}){% endif %}")
    assert [_user(r) for r in _requests(_lines(path, spec)).values()] == ["one (n)", "two"]


def test_a_folder_of_text_files_gives_one_row_per_file_in_sorted_order(tmp_path: Path):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("bee")
    (folder / "a.txt").write_text("ay 😀")
    (folder / "sub" / "c.md").write_text("sea")
    (folder / ".hidden").write_text("skipped")
    (folder / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    assert detect_format(str(folder)) == "text"
    outcomes = _lines(folder, TableSpec(model=MODEL, prompt="{{ path }}: {{ text }}", id_column="path"))
    requests = _requests(outcomes)
    assert [r["custom_id"] for r in requests.values()] == ["a.txt", "b.txt", "sub/c.md"]
    assert _user(requests[1]) == "a.txt: ay 😀"
    assert str(outcomes[3]) == "row 3: latin1.txt is not UTF-8 text (byte 3 is 0xe9)"
    assert outcomes[3].column == "text"


# ---------------------------------------------------------------- ids, embeddings, schemas, routes, hashes


def test_derived_ids_are_row_number_and_content_and_stable_across_runs(tricky_csv: Path, tmp_path: Path):
    spec = TableSpec(model=MODEL, prompt='{{ row["review text"] }}x')
    first = [r["custom_id"] for r in _requests(_lines(tricky_csv, spec)).values()]
    again = [r["custom_id"] for r in _requests(_lines(tricky_csv, spec)).values()]
    assert first == again and len(set(first)) == 6
    assert first[0].startswith("row-1-") and len(first[0]) == len("row-1-") + 12
    changed = tmp_path / "changed.csv"
    changed.write_text(TRICKY_CSV.replace("Great, really great", "Meh"))
    after = [r["custom_id"] for r in _requests(_lines(changed, spec)).values()]
    assert after[0] != first[0] and after[1:] == first[1:]  # only the changed row gets a new id


def test_an_empty_or_missing_id_is_a_row_error(tmp_path: Path):
    path = tmp_path / "ids.csv"
    path.write_text("id,text\n1,one\n,two\n")
    outcomes = _lines(path, TableSpec(model=MODEL, prompt="{{ text }}", id_column="id"))
    assert str(outcomes[2]) == "row 2: the --id-column `id` is empty in this row: every row needs its id"
    outcomes = _lines(path, TableSpec(model=MODEL, prompt="{{ text }}", id_column="key"))
    assert str(outcomes[1]).startswith("row 1: the --id-column `key` is not a column (columns: id, text)")


def test_embed_sends_the_column_to_the_embeddings_endpoint(tricky_csv: Path):
    outcomes = _lines(tricky_csv, TableSpec(model="text-embedding-3-small", embed="review text", id_column="id"))
    requests = _requests(outcomes)
    assert requests[1] == {
        "custom_id": "a1",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": "text-embedding-3-small", "input": "Great, really great"},
    }
    assert str(outcomes[5]) == "row 5: the --embed column `review text` is empty in this row"


def test_a_schema_asks_for_strict_json_schema_answers(tricky_csv: Path):
    schema = {"type": "object", "properties": {"sentiment": {"type": "string"}}, "required": ["sentiment"]}
    spec = TableSpec(
        model=MODEL,
        system="Label the review.",
        prompt="{{ note }}",
        schema=schema,
        schema_name="label",
        max_tokens=20,
        temperature=0.0,
    )
    request = _requests(_lines(tricky_csv, spec))[2]
    assert request["body"] == {
        "model": MODEL,
        "messages": [{"role": "system", "content": "Label the review."}, {"role": "user", "content": 'said "wow"'}],
        "max_tokens": 20,
        "temperature": 0.0,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "label", "strict": True, "schema": schema},
        },
    }


def test_a_rendered_line_is_exactly_the_request_serialized_whole():
    spec = TableSpec(model=MODEL, system="Sys {{ a }}", prompt="User {{ b }}", max_tokens=3)
    line = RequestRenderer(spec, ["a", "b"]).render(7, {"a": "x\u2028", "b": "y"})
    assert isinstance(line, bytes)
    assert line == orjson.dumps(json.loads(line)).replace("\u2028".encode(), b"\\u2028")


def test_the_route_column_is_read_not_acted_on():
    spec = TableSpec(model=MODEL, prompt="{{ text }}", route_column="urgent")
    renderer = RequestRenderer(spec, ["text", "urgent"])
    routes = [renderer.route_of({"urgent": cell}) for cell in ("yes", " TRUE ", "1", True, 2, "realtime")]
    assert routes == ["realtime"] * 6
    assert [route_value(cell) for cell in ("", None, "no", "0", 0, "batch", "later")] == ["batch"] * 7
    assert RequestRenderer(TableSpec(model=MODEL, prompt="{{ text }}"), ["text"]).route_of({}) == "batch"


def test_request_hash_ignores_the_custom_id_and_the_spelling_of_the_json():
    renderer = RequestRenderer(TableSpec(model=MODEL, prompt="{{ text }}"), ["text"])
    one, two = renderer.render(1, {"text": "same é"}), renderer.render(2, {"text": "same é"})
    assert isinstance(one, bytes) and isinstance(two, bytes)
    assert orjson.loads(one)["custom_id"] != orjson.loads(two)["custom_id"]
    assert request_hash(one) == request_hash(two)
    hand_written = (
        b'{"body": {"messages": [{"content": "same \\u00e9", "role": "user"}], "model": "gpt-4o-mini"},'
        b' "url": "/v1/chat/completions", "method": "POST", "custom_id": "mine"}'
    )
    assert request_hash(hand_written) == request_hash(one)
    other = renderer.render(1, {"text": "different"})
    assert isinstance(other, bytes) and request_hash(other) != request_hash(one)


def test_a_constant_template_and_jinja_filters_work(tmp_path: Path):
    path = tmp_path / "t.csv"
    path.write_text("text\nabc\n")
    spec = TableSpec(model=MODEL, system="Constant.", prompt="{{ text | upper }} {{ text | length }}")
    request = _requests(_lines(path, spec))[1]
    assert request["body"]["messages"] == [
        {"role": "system", "content": "Constant."},
        {"role": "user", "content": "ABC 3"},
    ]
