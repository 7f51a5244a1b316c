"""Property-based tests: whatever the catalog holds, each row is embedded or quarantined with the
right reasons, nothing is lost, and a schema problem is one ContractError.

The rows go through the functions a Spark task runs (check_batch,
BatchEmbedder.embed_or_quarantine); an independent oracle in plain Python says which rules each
generated row breaks. tests/test_bad_catalogs_job.py runs the same generator through the job.
"""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from itemsage_core.contracts.catalog_check import check_batch
from itemsage_core.contracts.catalog_contract import MAX_IMAGES, PRODUCT_ID, RULES, repeated_ids_of
from itemsage_core.contracts.column_mapping import conformed, parse_mapping
from itemsage_core.embedding.batch_embedder import BatchEmbedder
from itemsage_core.errors import ContractError

DIM = 256  # the tiny model's image dimension
NOT_UTF8 = [b"\xff", b"caf\xe9", b"\xed\xa0\x80 lone surrogate", b"ok\xc3", b"\xf8\x88\x80\x80\x80"]
ODD_TEXT = [
    "e\u0301\u0301\u0301",
    "\u202eevil\u202c",
    "\u05e9\u05dc\u05d5\u05dd abc",
    "😀👍🏽🇫🇷",
    "nul\x00byte",
    "\ufeffbom",
    "\u200b",
    "Ω≈ç√∫",
    "ᚠᛇᚻ",
    "\U0010fffd",
    "a\ufffdb",
]
MEGABYTE = "word " * (2**20 // 5)

words = st.from_regex(r"[a-z0-9]{1,8}( [a-z0-9]{1,8}){0,3}", fullmatch=True)
odd_texts = st.one_of(
    st.none(),
    st.sampled_from(["", "  ", "\t\n", "\u3000", "\x1f", "\x85\u2028"]),
    st.text(max_size=12),  # any code point but lone surrogates (those cannot be UTF-8 at all)
    st.sampled_from(ODD_TEXT),
    st.sampled_from(NOT_UTF8),
)
texts = st.one_of(words, words, odd_texts)  # about half the values are ordinary words
ids = st.one_of(words, words, st.sampled_from(["p1", "p2"]), odd_texts)


@st.composite
def vectors(draw):
    kind = draw(st.sampled_from(["ok"] * 12 + ["null", "short", "long", "bad_value", "bad_value"]))
    if kind == "null":
        return None
    size = {"short": 3, "long": DIM + 1}.get(kind, DIM)
    values = np.full(size, draw(st.floats(-1, 1, width=32)), np.float32).tolist()
    if kind == "bad_value":
        values[draw(st.integers(0, size - 1))] = draw(
            st.sampled_from([math.nan, math.inf, -math.inf, None])
        )
    return values


images = st.one_of(
    st.none(),
    st.lists(vectors(), max_size=3),
    st.lists(vectors(), max_size=3),
    st.integers(MAX_IMAGES - 1, MAX_IMAGES + 3).map(lambda n: [[0.1] * DIM] * n),
)


@st.composite
def rows(draw):
    row = {PRODUCT_ID: draw(ids), "title": draw(texts), "image_embeddings": draw(images)}
    row["brand"] = draw(texts)
    row["colors"] = draw(st.one_of(st.none(), st.lists(texts, max_size=3)))
    row["description"] = draw(st.one_of(texts, st.just(MEGABYTE)))
    row["in_stock"] = draw(st.one_of(st.none(), st.booleans()))
    return row


def text_array(values: list, list_of: bool = False) -> pa.Array:
    """A string (or list<string>) array holding exactly these values, bytes not decoded."""
    if list_of:
        flat = text_array([v for items in values if items is not None for v in items])
        offsets = np.cumsum([0] + [len(v) if v is not None else 0 for v in values])
        return pa.ListArray.from_arrays(
            pa.array(offsets, pa.int32()),
            flat,
            mask=pa.array([v is None for v in values], pa.bool_()),
        )
    data = [v.encode() if isinstance(v, str) else (v or b"") for v in values]
    offsets = np.cumsum([0] + [len(b) for b in data]).astype(np.int32)
    valid = np.packbits(np.array([v is not None for v in values], bool), bitorder="little")
    return pa.Array.from_buffers(
        pa.string(),
        len(values),
        [
            pa.py_buffer(valid.tobytes()),
            pa.py_buffer(offsets.tobytes()),
            pa.py_buffer(b"".join(data)),
        ],
    )


def catalog_table(generated: list[dict]) -> pa.Table:
    column = (
        {name: [r[name] for r in generated] for name in generated[0]}
        if generated
        else {
            name: []
            for name in (
                PRODUCT_ID,
                "title",
                "image_embeddings",
                "brand",
                "colors",
                "description",
                "in_stock",
            )
        }
    )
    return pa.table(
        {
            PRODUCT_ID: text_array(column[PRODUCT_ID]),
            "title": text_array(column["title"]),
            "brand": text_array(column["brand"]),
            "description": text_array(column["description"]),
            "colors": text_array(column["colors"], list_of=True),
            "image_embeddings": pa.array(
                column["image_embeddings"], pa.list_(pa.list_(pa.float32()))
            ),
            "in_stock": pa.array(column["in_stock"], pa.bool_()),
        }
    )


def _decoded(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _undecodable(value) -> bool:
    return value is not None and "\ufffd" in _decoded(value)


def _blank(value) -> bool:
    """Null, or only whitespace as str.isspace has it (Arrow's utf8_trim_whitespace agrees on
    every code point, \x1c-\x1f included)."""
    return value is None or not _decoded(value).strip()


def expected_rules(generated: list[dict]) -> list[set[str]]:
    """The oracle: the rules each row breaks, from the contract's text (docs/data-contracts.md)."""
    copies: dict[str, int] = {}
    for r in generated:
        if r[PRODUCT_ID] is not None:
            key = _decoded(r[PRODUCT_ID])
            copies[key] = copies.get(key, 0) + 1
    out = []
    for r in generated:
        rules = set()
        if _blank(r[PRODUCT_ID]):
            rules.add("missing_product_id")
        if r[PRODUCT_ID] is not None and copies[_decoded(r[PRODUCT_ID])] > 1:
            rules.add("duplicate_product_id")
        if _blank(r["title"]):
            rules.add("missing_title")
        vecs = r["image_embeddings"] or []
        if len(vecs) > MAX_IMAGES:
            rules.add("too_many_images")
        if any(v is None or len(v) != DIM for v in vecs):
            rules.add("image_dim_mismatch")
        if any(v is not None and any(x is None or not math.isfinite(x) for x in v) for v in vecs):
            rules.add("image_not_finite")
        if _undecodable(r[PRODUCT_ID]):
            rules.add("undecodable_product_id")
        out.append(rules)
    return out


def rule_names(reason: str | None) -> set[str]:
    return set() if reason is None else {part.split(":")[0] for part in reason.split("; ")}


@pytest.fixture(scope="module")
def embedder(tiny_model_dir):
    from itemsage_core.model.checkpoint import read_checkpoint_manifest

    version = read_checkpoint_manifest(str(tiny_model_dir))["model_version"]
    return BatchEmbedder.for_model(str(tiny_model_dir), version, batch_size=16, device="cpu")


def run_task(embedder, raw: pa.Table, mapping=None):
    """What one Spark task does with a batch (the whole catalog here, so copies are complete).
    The batch is a slice of a longer one, as the job's row-group slices are."""
    padded = pa.concat_tables([raw.slice(0, 1), raw]).combine_chunks() if raw.num_rows else raw
    batch = padded.slice(1) if raw.num_rows else raw
    ids = conformed(batch, mapping).column(PRODUCT_ID)  # a schema problem raises here
    table, reasons = check_batch(batch, mapping, DIM, repeated_ids_of(ids))
    at = dt.datetime(2026, 11, 25, tzinfo=dt.timezone.utc)
    good, bad = embedder.embed_or_quarantine(table, reasons, "run-test", at)
    return table, reasons, good, bad


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)
@given(generated=st.lists(rows(), max_size=12))
def test_every_row_is_embedded_or_quarantined_for_exactly_its_reasons(embedder, generated):
    table, reasons, good, bad = run_task(embedder, catalog_table(generated))
    n_good = good.num_rows if good is not None else 0
    n_bad = bad.num_rows if bad is not None else 0
    assert n_good + n_bad == len(generated)  # the counts add up: nothing lost or doubled
    assert [rule_names(r) for r in reasons.to_pylist()] == expected_rules(generated)
    # Text is conformed to valid UTF-8, bad bytes as U+FFFD (Python's errors="replace").
    assert table.column("title").to_pylist() == [_decoded(r["title"]) for r in generated]
    if good is not None:
        ids = good.column(PRODUCT_ID).to_pylist()
        assert len(set(ids)) == len(ids) and all(i.strip() for i in ids)
        vectors = np.stack(good.column("embedding").to_numpy(zero_copy_only=False))
        assert np.isfinite(vectors).all()
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    if bad is not None:
        assert bad.column("reason").null_count == 0
        for raw in bad.column("raw_json").to_pylist():  # strict JSON, valid UTF-8
            json.loads(raw, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


COLUMN_TYPES = [
    pa.string(),
    pa.large_string(),
    pa.binary(),
    pa.int64(),
    pa.float64(),
    pa.bool_(),
    pa.null(),
    pa.dictionary(pa.int32(), pa.string()),
    pa.list_(pa.string()),
    pa.list_(pa.int64()),
    pa.struct([("a", pa.string())]),
    pa.list_(pa.list_(pa.float64())),
    pa.list_(pa.list_(pa.int32())),
    pa.list_(pa.float32()),
]


def column_of(arrow_type: pa.DataType, n: int) -> pa.Array:
    """n rows of `arrow_type`, made by casting nulls (or simple values where the cast exists)."""
    samples = {pa.types.is_integer: 7, pa.types.is_floating: 0.5, pa.types.is_boolean: True}
    for test, value in samples.items():
        if test(arrow_type):
            return pa.array([value] * n, arrow_type)
    if arrow_type in (pa.string(), pa.large_string(), pa.binary()):
        return pa.array([f"v{i}" for i in range(n)], pa.string()).cast(arrow_type)
    if pa.types.is_dictionary(arrow_type):
        return pa.array([f"v{i}" for i in range(n)], pa.string()).dictionary_encode()
    return pa.nulls(n, arrow_type)


@settings(max_examples=150, deadline=None)
@given(
    columns=st.dictionaries(
        st.sampled_from([PRODUCT_ID, "title", "colors", "image_embeddings", "brand", "extra"]),
        st.sampled_from(COLUMN_TYPES),
        max_size=6,
    ),
    n=st.integers(0, 3),
)
def test_any_schema_conforms_or_is_one_contract_error(embedder, columns, n):
    raw = pa.table({name: column_of(t, n) for name, t in columns.items()})
    try:
        table, reasons, good, bad = run_task(embedder, raw)
    except ContractError as exc:
        assert str(exc).startswith("catalog") and "\n" not in str(exc)
        return
    assert (good.num_rows if good is not None else 0) + (
        bad.num_rows if bad is not None else 0
    ) == n
    assert PRODUCT_ID in columns and "title" in columns  # otherwise it had to be refused


MAPPING = parse_mapping(
    {
        "features": {
            "product_id": {"from": "sku"},
            "title": {"from": ["name", "brand_name"]},
            "colors": {"from": "tags", "split": "|"},
            "links": {"from": "link_list", "parse": "list"},
        },
        "extras": {
            "price": {"from": "price", "type": "double"},
            "in_stock": {"from": "stock", "type": "boolean"},
        },
    }
)


@settings(max_examples=100, deadline=None)
@given(
    sku=st.lists(st.one_of(st.integers(-3, 3), st.none()), min_size=1, max_size=8), data=st.data()
)
def test_mapped_catalog_of_odd_text_never_crashes(embedder, sku, data):
    n = len(sku)

    def text_column():
        return text_array(data.draw(st.lists(texts, min_size=n, max_size=n)))

    raw = pa.table(
        {
            "sku": pa.array(sku, pa.int64()),
            "name": text_column(),
            "brand_name": text_column(),
            "tags": text_column(),
            "link_list": text_column(),
            "price": text_column(),
            "stock": text_column(),
        }
    )
    table, reasons, good, bad = run_task(embedder, raw, MAPPING)
    assert (good.num_rows if good is not None else 0) + (
        bad.num_rows if bad is not None else 0
    ) == n
    # Integer skus are formatted as text; a null sku is a missing id; ids are never blank.
    assert table.column(PRODUCT_ID).to_pylist() == [None if s is None else str(s) for s in sku]
    for name in ("price", "in_stock"):  # unparseable extras reject their row, never crash
        assert table.column(name).type in (pa.float64(), pa.bool_())
    # odd text cannot break a reason apart
    assert set().union(*map(rule_names, reasons.to_pylist())) <= set(RULES)
