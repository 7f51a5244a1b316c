"""Search settings tuned to served recall: of the settings a surface leaves at "auto"
(`probe_clusters` of k-means, its shards' `ef_search` / `nprobe`, the quantised types' `rerank`),
the cheapest combination, by measured queries/s, whose served recall (served_recall) meets
`min_recall` with two standard errors to spare; recorded in the manifest, which every reader
follows. A setting given as a number is used as it is.

Recall only grows with each setting, so the search walks a staircase: for each combination of
the outer settings (probe clusters, re-rank depth), a binary search over the shards' own setting
below the least one a cheaper combination needed; a combination that needs no less than one
below it is never cheaper, and one whose k-means routing alone (the share of the exact top 10
in the clusters probed) misses the target cannot meet it: neither is searched. A trial searches
a fifth of the sample first and stops when that is far below the target."""

from __future__ import annotations

import dataclasses
import itertools
import time

from index_builder.index_types.registry import AUTO, type_of
from index_builder.served_recall import Sample, Served, ceiling, served

MARGIN = 2.0  # standard errors an "auto" choice keeps above min_recall
RERANK_STEPS = (1, 2, 4, 8, 16, 32)  # re-rank depths tried (candidates per result)
PROBE_STEPS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 48, 64, 96, 128)
QUICK = 5  # a trial first searches every 5th query of the sample ...
REJECT = 3.0  # ... and stops there when its recall is this many standard errors below target


@dataclasses.dataclass(frozen=True)
class Knob:
    name: str  # a manifest `params` / shard `search` key
    values: tuple[int, ...]  # ascending: each costs more and finds more


def knobs(index, config: dict) -> list[Knob]:
    """The settings of a loaded build and the values each may take: every value tried for an
    "auto" one, the configured one else. The shards' own setting comes last."""
    manifest = index.manifest
    kinds = [type_of(entry) for entry in manifest["shards"]]
    out = []
    if index.centroids is not None:
        clusters = len({entry["cluster"] for entry in manifest["shards"]})
        probes = config["probe_clusters"]
        values = sorted({min(n, clusters) for n in PROBE_STEPS})
        out.append(Knob("probe_clusters", tuple(values) if probes == AUTO else (probes,)))
    if any(kind.quantised for kind in kinds) and config.get("rerank") == AUTO:
        out.append(Knob("rerank", RERANK_STEPS))
    for key in sorted({kind.setting_name for kind in kinds}):
        steps = setting_steps(index, key)
        configured = config.get(key, AUTO)
        out.append(Knob(key, steps if configured == AUTO else (min(configured, steps[-1]),)))
    return out


def setting_steps(index, key: str) -> tuple[int, ...]:
    """The values of a shard setting (`ef_search`, `nprobe`) tried: its types' sweep steps, up
    to the most any shard searched with it takes (ef_search 10 to MAX_EF; nprobe up to the
    fewest lists)."""
    shards = [
        (type_of(entry), shard)
        for entry, shard in zip(index.manifest["shards"], index.indexes)
        if type_of(entry).setting_name == key
    ]
    most = min(shard.setting_range()[1] for _, shard in shards)
    return tuple(sorted({min(n, most) for kind, _ in shards for n in kind.sweep_steps}))


def apply(index, settings: dict) -> None:
    """Search the loaded build with `settings` from now on: in its manifest (params, and each
    shard's `search` for its type's keys) and on its quantised shards (re-rank depth)."""
    manifest = index.manifest
    shards = []
    for entry, shard in zip(manifest["shards"], index.indexes):
        kind = type_of(entry)
        search = dict(entry.get("search", {}))
        if kind.setting_name in settings:
            search[kind.setting_name] = settings[kind.setting_name]
        if kind.quantised and "rerank" in settings:
            search["rerank"] = shard.rerank = settings["rerank"]
        shards.append({**entry, "search": search})
    index.manifest = {**manifest, "params": {**manifest["params"], **settings}, "shards": shards}


@dataclasses.dataclass
class Tuning:
    """What tuning chose (`settings`, and the build searched with them) and what it tried."""

    settings: dict
    served: Served
    found: object  # rows the chosen settings found (served_recall.search)
    tried: int
    seconds: float
    met: bool  # whether the settings meet min_recall with the margin
    auto: list[str]  # the settings tuned (the others were given)

    def figures(self) -> dict:
        return {
            "auto": self.auto,
            "met": self.met,
            "trials": self.tried,
            "seconds": self.seconds,
            "margin_stderr": MARGIN,
        }


def tune(index, drawn: Sample, config: dict, target: float) -> Tuning:
    """The cheapest settings meeting `target` (see the module), applied to the loaded build;
    the most of every setting when none does."""
    started = time.perf_counter()
    all_knobs = knobs(index, config)
    trials: dict[tuple, tuple[Served, object]] = {}
    whole: set[tuple] = set()  # the trials measured on the whole sample
    first = dataclasses.replace(drawn, queries=drawn.queries[::QUICK], exact=drawn.exact[::QUICK])

    def measured(values: tuple, full: bool = False) -> Served:
        if values not in trials or (full and values not in whole):
            apply(index, dict(zip((k.name for k in all_knobs), values)))
            if not full:
                trials[values] = served(index, first)
                if trials[values][0].recall + REJECT * trials[values][0].stderr < target:
                    return trials[values][0]  # far below: not searched further
            trials[values] = served(index, drawn)
            whole.add(values)
        return trials[values][0]

    # warm-up: the first touches of the graphs and vectors, not timed as any setting
    measured(tuple(k.values[0] for k in all_knobs))
    trials.clear()
    whole.clear()
    *outer, inner = all_knobs  # the shards' own setting is always there
    least: dict[tuple, int] = {}  # outer combination -> least inner value index that meets
    for combo in itertools.product(*(range(len(k.values)) for k in outer)):
        below = [i for c, i in least.items() if all(a <= b for a, b in zip(c, combo))]
        high = min(below) - 1 if below else len(inner.values) - 1
        if high < 0:
            continue  # needs no less than a cheaper combination
        apply(index, dict(zip((k.name for k in all_knobs), _values(all_knobs, combo, high))))
        if not ceiling(index, drawn).meets(target, MARGIN):
            continue  # its routing loses too much whatever the shards find
        point = _least(
            lambda i, combo=combo: measured(_values(all_knobs, combo, i)).meets(target, MARGIN),
            high,
        )
        if point is not None:
            least[combo] = point
    chosen = max(
        (_values(all_knobs, c, i) for c, i in least.items()),
        key=lambda values: trials[values][0].qps,
        default=tuple(k.values[-1] for k in all_knobs),
    )
    measured(chosen, full=True)
    settings = dict(zip((k.name for k in all_knobs), chosen))
    apply(index, settings)
    auto = [k.name for k in all_knobs if len(k.values) > 1]
    seconds = time.perf_counter() - started
    return Tuning(settings, *trials[chosen], len(trials), seconds, bool(least), auto)


def _values(all_knobs: list[Knob], combo: tuple, inner: int) -> tuple:
    return (*(k.values[i] for k, i in zip(all_knobs, combo)), all_knobs[-1].values[inner])


def _least(meets, high: int) -> int | None:
    """The least index in [0, high] where `meets` holds (it holds from there on), or None."""
    low, top = 0, high
    while low < top:
        middle = (low + top) // 2
        if meets(middle):
            top = middle
        else:
            low = middle + 1
    return low if meets(low) else None
