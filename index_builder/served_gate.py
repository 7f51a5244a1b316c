"""The recall gate as served: a finished build, loaded on the driver as the reader loads it, is
measured with served_recall on a seeded sample of its products (its "auto" search settings tuned
first, served_tuning), and publishes only when its served recall meets `min_recall`. The shards'
own recall and k-means routing stay in the manifest as diagnostics, and a failure names the
weakest of them and the setting that would lift it."""

from __future__ import annotations

from index_builder.index_reader import ShardedIndex
from index_builder.index_types.registry import AUTO, type_of
from index_builder.served_recall import draw, parts
from index_builder.served_tuning import RERANK_STEPS, tune
from index_builder.surfaces import Surface
from itemsage_core.storage.store import Store


def served_manifest(store: Store, surface: Surface, manifest: dict) -> dict:
    """The build's manifest with the search settings it is served with (tuned where "auto") and
    its `served` figures: recall@10, standard error, queries, queries/s, the settings, what
    tuning cost, and where the top 10 are lost (`parts`); `routing_recall` is the routing's
    share. Loading errors (a file that does not match) propagate."""
    manifest = {
        **manifest,
        "shards": [
            {**e, "gate_search": e.get("gate_search", e.get("search", {}))}
            for e in manifest["shards"]
        ],
    }
    index = ShardedIndex.load(store, surface.name, manifest["build_id"], manifest=manifest)
    drawn = draw(index, surface.served_queries, surface.seed)
    tuning = tune(index, drawn, surface.params(), surface.min_recall)
    lost = parts(index, drawn, tuning.found)
    return {
        **index.manifest,
        "routing_recall": lost["routing"],
        "served": {
            **tuning.served.figures(),
            "seed": drawn.seed,
            "settings": tuning.settings,
            "tuning": tuning.figures(),
            "parts": lost,
        },
    }


def settings_text(served: dict) -> str:
    """`ef_search 48, probe_clusters 3` (`, the most tried` when tuning met no target)."""
    text = ", ".join(f"{key} {value}" for key, value in served["settings"].items())
    tuning = served["tuning"]
    return text + (", the most tried" if tuning["auto"] and not tuning["met"] else "")


def served_text(served: dict) -> str:
    """`served recall@10 0.981 (+- 0.004, 1000 queries) at ef_search 48`."""
    return (
        f"served recall@10 {served['recall_at_10']:.3f} (+- {served['stderr']:.3f}, "
        f"{served['queries']} queries) at {settings_text(served)}"
    )


def weakest(surface: Surface, manifest: dict) -> str:
    """The part of a build that loses most of the top 10, and what would lift it."""
    lost = manifest["served"]["parts"]
    config = surface.params()
    shares = {s: v for s, v in enumerate(lost["shards"]) if v is not None}
    routing = lost["routing"]
    if routing is not None and (not shares or routing <= min(shares.values())):
        probes = manifest["params"]["probe_clusters"]
        lift = "raise probe_clusters" + ("" if config["probe_clusters"] == AUTO else ' or "auto"')
        return (
            f"k-means routing reaches {routing:.3f} of the top 10 at probe_clusters {probes}: "
            f"{lift}"
        )
    shard = min(shares, key=shares.get)
    entry = manifest["shards"][shard]
    kind = type_of(entry)
    search = entry["search"]
    setting = f"{kind.setting_name} {search.get(kind.setting_name)}"
    if kind.quantised:
        setting += f", rerank {search.get('rerank')}"
    if config.get(kind.setting_name, AUTO) != AUTO:
        lift = f'raise {kind.setting_name} or set it to "auto"'
    elif kind.quantised and config.get("rerank") != AUTO:
        lift = 'raise rerank or set it to "auto"'
    elif kind.quantised and search.get("rerank", 0) < RERANK_STEPS[-1]:
        lift = "raise rerank"
    elif kind.setting_name == "nprobe":
        lift = "raise pq_bytes (finer codes)"
    else:
        lift = "raise M or ef_construction (a better graph)"
    share = shares[shard]
    return f"shard {shard} ({kind.name}, {setting}) returns {share:.3f} of its top 10: {lift}"
