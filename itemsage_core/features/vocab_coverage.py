"""Vocabulary coverage: how much of a catalog's text a model's vocabulary knows.

`Vocabulary.encode` counts, per text feature and token kind, the token occurrences it found in the
vocabulary and all token occurrences (`TextBags.coverage`); counts of several batches or tasks add
up. The headline figure is **word coverage**: the share of word (unigram) occurrences that are in
the vocabulary, over all features and per feature. Character trigrams are not used for it: they
are shared by most text in one script, so a model built for other text still knows most of them.
A model trained on another catalog's text covers little of this one's words and embeds it poorly
(docs/model.md, "A real catalog"); below `DEFAULT_MIN_COVERAGE` the embedding job warns.
"""

from __future__ import annotations

from itemsage_core.features.text_tokens import KINDS

DEFAULT_MIN_COVERAGE = 0.5
Counts = dict[str, dict[str, list[int]]]


def add_coverage(total: Counts, part: Counts) -> Counts:
    """Add `part`'s counts into `total` (in place) and return it."""
    for feature, kinds in part.items():
        into = total.setdefault(feature, {k: [0, 0] for k in KINDS})
        for kind, (known, seen) in kinds.items():
            into[kind][0] += int(known)
            into[kind][1] += int(seen)
    return total


def _share(known: int, seen: int) -> float | None:
    return known / seen if seen else None


def coverage_summary(counts: Counts, min_coverage: float = DEFAULT_MIN_COVERAGE) -> dict:
    """Word coverage overall and per feature (features with words only), per-kind shares, the
    counts, and whether the overall word coverage is below `min_coverage`."""
    known = sum(kinds["unigram"][0] for kinds in counts.values())
    seen = sum(kinds["unigram"][1] for kinds in counts.values())
    per_feature = {
        f: round(kinds["unigram"][0] / kinds["unigram"][1], 4)
        for f, kinds in counts.items()
        if kinds["unigram"][1]
    }
    per_kind = {}
    for kind in KINDS:
        share = _share(
            sum(c[kind][0] for c in counts.values()), sum(c[kind][1] for c in counts.values())
        )
        per_kind[kind] = None if share is None else round(share, 4)
    overall = _share(known, seen)
    return {
        "word_coverage": None if overall is None else round(overall, 4),
        "per_feature": per_feature,
        "per_kind": per_kind,
        "words": seen,
        "min_coverage": min_coverage,
        "low": overall is not None and overall < min_coverage,
    }


def low_coverage_warning(summary: dict, model: str) -> str | None:
    """One warning line naming the worst-covered features, or None when coverage is fine."""
    if not summary["low"]:
        return None
    worst = sorted(summary["per_feature"].items(), key=lambda item: item[1])[:3]
    named = ", ".join(f"{f} {share:.0%}" for f, share in worst)
    return (
        f"warning: model {model} knows only {summary['word_coverage']:.0%} of this "
        f"catalog's words (below {summary['min_coverage']:g}; worst: {named}): it was "
        "built for other text and will embed this catalog poorly. Train on this catalog "
        "(`itemsage train --catalog ...`, docs/model.md) and check it with "
        "`itemsage evaluate-catalog`"
    )
