"""Per-feature vocabularies of unigrams, bigrams and trigrams, and text-to-token-id encoding.

Every (feature, kind) pair has its own vocabulary: the top-K tokens of the catalog by frequency
(ties broken by the token's text), tokens seen fewer than `min_count` times left out. Ids are
disjoint: the vocabularies are laid end to end in TEXT_FEATURES order, kinds in KINDS order.
Out-of-vocabulary tokens are dropped. A product's tokens for one feature form one bag; the bags of
a batch are a CSR pair (`ids`, `offsets`), bag `row * F + f` for row `row` and feature `f`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from itemsage_core.contracts.arrow_checks import as_array
from itemsage_core.contracts.catalog_contract import TEXT_FEATURES
from itemsage_core.errors import ContractError
from itemsage_core.features.text_tokens import KINDS, tokenize, trigram_codes, trigram_text

FEATURES = tuple(TEXT_FEATURES)
CHUNK_ROWS = 20_000


@dataclasses.dataclass(frozen=True)
class VocabConfig:
    """Top-K per feature and kind (the paper: 200k / 1M / 64k) and the minimum token count."""

    unigrams: int = 50_000
    bigrams: int = 100_000
    trigrams: int = 20_000
    min_count: int = 2

    def limit(self, kind: str) -> int:
        return {"unigram": self.unigrams, "bigram": self.bigrams, "trigram": self.trigrams}[kind]


@dataclasses.dataclass
class TextBags:
    """Token ids of each (row, feature) bag: bag b holds ids[offsets[b]:offsets[b + 1]].

    `coverage`: per feature and kind, [tokens in the vocabulary, all tokens] of the encoded text
    (occurrences, not distinct tokens); counts of several batches add up (`add_coverage`)."""

    ids: np.ndarray
    offsets: np.ndarray
    coverage: dict[str, dict[str, list[int]]] = dataclasses.field(default_factory=dict)

    @property
    def rows(self) -> int:
        return (len(self.offsets) - 1) // len(FEATURES)


class Vocabulary:
    """The token vocabularies of all features; `encode` maps a catalog batch to TextBags."""

    def __init__(self, tokens: dict[str, dict[str, list[str]]]):
        self.tokens = {f: {k: list(tokens.get(f, {}).get(k, [])) for k in KINDS} for f in FEATURES}
        self.base: dict[tuple[str, str], int] = {}
        start = 0
        for f in FEATURES:
            for k in KINDS:
                self.base[f, k] = start
                start += len(self.tokens[f][k])
        self.size = start
        self._strings = {
            (f, k): pa.array(self.tokens[f][k], pa.string())
            for f in FEATURES
            for k in ("unigram", "bigram")
        }
        self._trigrams = {}
        for f in FEATURES:
            codes = trigram_codes(self.tokens[f]["trigram"])
            order = np.argsort(codes, kind="stable")
            self._trigrams[f] = (codes[order], order.astype(np.int64))

    def _lookup(self, feature: str, kind: str, tokens, rows: np.ndarray):
        """Vocabulary ids of in-vocabulary tokens and their rows."""
        if kind == "trigram":
            codes, ids = self._trigrams[feature]
            if len(codes) == 0 or len(tokens) == 0:
                return np.zeros(0, np.int64), rows[:0]
            at = np.minimum(np.searchsorted(codes, tokens), len(codes) - 1)
            known = codes[at] == tokens
            return ids[at[known]] + self.base[feature, kind], rows[known]
        where = pc.index_in(tokens, value_set=self._strings[feature, kind])
        known = pc.is_valid(where).to_numpy(zero_copy_only=False)
        ids = where.to_numpy(zero_copy_only=False)[known].astype(np.int64)
        return ids + self.base[feature, kind], rows[known]

    def encode(self, table: pa.Table | pa.RecordBatch) -> TextBags:
        """The bags of every row and text feature of a conformed catalog batch."""
        n, F = table.num_rows, len(FEATURES)
        all_ids, all_bags = [], []
        coverage: dict[str, dict[str, list[int]]] = {}
        for f_index, feature in enumerate(FEATURES):
            toks = tokenize(as_array(table.column(feature)))
            coverage[feature] = {}
            for kind, tokens, rows in (
                ("unigram", toks.unigrams, toks.unigram_rows),
                ("bigram", toks.bigrams, toks.bigram_rows),
                ("trigram", toks.trigrams, toks.trigram_rows),
            ):
                ids, id_rows = self._lookup(feature, kind, tokens, rows)
                all_ids.append(ids)
                all_bags.append(id_rows * F + f_index)
                coverage[feature][kind] = [len(ids), len(rows)]
        ids, bags = np.concatenate(all_ids), np.concatenate(all_bags)
        order = np.argsort(bags, kind="stable")
        offsets = np.zeros(n * F + 1, np.int64)
        np.cumsum(np.bincount(bags, minlength=n * F), out=offsets[1:])
        return TextBags(ids=ids[order], offsets=offsets, coverage=coverage)

    def sizes(self) -> dict[str, dict[str, int]]:
        return {f: {k: len(self.tokens[f][k]) for k in KINDS} for f in FEATURES}

    def to_json(self) -> str:
        return json.dumps(
            {"features": FEATURES, "kinds": KINDS, "tokens": self.tokens},
            ensure_ascii=False,
            separators=(",", ":"),
        )

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        return cls.from_json(Path(path).read_text(encoding="utf-8"), str(path))

    @classmethod
    def from_json(cls, text: str | bytes, source: str) -> Vocabulary:
        """The vocabulary that to_json wrote; `source` names it in errors."""
        data = json.loads(text)
        if tuple(data.get("features", ())) != FEATURES or tuple(data.get("kinds", ())) != KINDS:
            raise ContractError(
                f"{source}: vocabulary features or kinds differ from this version's"
            )
        return cls(data["tokens"])


COUNTS_SCHEMA = pa.schema(
    [
        pa.field("feature", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("token", pa.string()),
        pa.field("count", pa.int64()),
    ]
)
_CODE_DIGITS = 20  # a trigram code as zero-padded decimal text: text order is code order


def token_counts(table: pa.Table | pa.RecordBatch) -> pa.Table:
    """How often each (feature, kind, token) occurs in a conformed catalog batch (COUNTS_SCHEMA).
    A trigram's token is its code as 20-digit text. Counts of several batches add up (on Spark
    too), and vocabulary_from_counts makes the vocabulary of their sums."""
    parts = []
    for feature in FEATURES:
        toks = tokenize(as_array(table.column(feature)))
        for kind, tokens in (("unigram", toks.unigrams), ("bigram", toks.bigrams)):
            counted = pc.value_counts(tokens)
            parts.append((feature, kind, counted.field("values"), counted.field("counts")))
        codes, n = np.unique(toks.trigrams, return_counts=True)
        texts = pa.array([str(c).zfill(_CODE_DIGITS) for c in codes.tolist()], pa.string())
        parts.append((feature, "trigram", texts, pa.array(n, pa.int64())))
    return pa.table(
        {
            "feature": pa.array([f for f, _, t, _ in parts for _ in range(len(t))], pa.string()),
            "kind": pa.array([k for _, k, t, _ in parts for _ in range(len(t))], pa.string()),
            "token": pa.concat_arrays([t.cast(pa.string()) for _, _, t, _ in parts]),
            "count": pa.concat_arrays([c.cast(pa.int64()) for *_, c in parts]),
        },
        schema=COUNTS_SCHEMA,
    )


def vocabulary_from_counts(counts: pa.Table, config: VocabConfig = VocabConfig()) -> Vocabulary:
    """The vocabulary of summed token counts (one row per (feature, kind, token)): per feature
    and kind, the tokens seen at least min_count times, most frequent first, ties by text, the
    first `limit`."""
    kept = counts.filter(pc.greater_equal(counts.column("count"), config.min_count))
    kept = kept.take(pc.sort_indices(kept, [("count", "descending"), ("token", "ascending")]))
    tokens: dict[str, dict[str, list[str]]] = {f: {} for f in FEATURES}
    for feature in FEATURES:
        of_feature = kept.filter(pc.equal(kept.column("feature"), feature))
        for kind in KINDS:
            of_kind = of_feature.filter(pc.equal(of_feature.column("kind"), kind))
            top = of_kind.column("token").to_pylist()[: config.limit(kind)]
            if kind == "trigram":
                top = trigram_text(np.array([int(t) for t in top], np.uint64))
            tokens[feature][kind] = top
    return Vocabulary(tokens)


def sum_counts(counts: pa.Table) -> pa.Table:
    """One row per (feature, kind, token), its counts added up."""
    summed = counts.group_by(["feature", "kind", "token"]).aggregate([("count", "sum")])
    return summed.rename_columns(["feature", "kind", "token", "count"]).cast(COUNTS_SCHEMA)


def build_vocabulary(table: pa.Table, config: VocabConfig = VocabConfig()) -> Vocabulary:
    """Count every feature's tokens over a conformed catalog and keep the top-K of each kind."""
    parts = [
        token_counts(table.slice(start, CHUNK_ROWS))
        for start in range(0, table.num_rows, CHUNK_ROWS)
    ]
    counts = pa.concat_tables(parts) if parts else COUNTS_SCHEMA.empty_table()
    return vocabulary_from_counts(sum_counts(counts), config)
