"""The report's HTML: one self-contained page (inline CSS, no script) that shows the plots
beside the figures they come from; every value is escaped."""

from __future__ import annotations

from html import escape

STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 90%; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { border: 1px solid #ddd; margin: 4px 0; max-width: 100%; }
.note { color: #666; font-size: 90%; }
"""


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return escape("" if value is None else str(value))


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(name: str, alt: str) -> str:
    return f'<img src="{escape(name)}" alt="{escape(alt)}">'


def _surface(name: str, s: dict, images: dict[str, str]) -> str:
    parts = [f"<h2>Surface {escape(name)}</h2>"]
    parts.append(
        _table(
            [
                "build",
                "created",
                "model",
                "table version",
                "products",
                "shards",
                "index",
                "served recall@10 at publish",
                "+-",
                "shards' own, min",
                "min_recall",
            ],  # fmt: skip
            [
                [
                    s["build_id"],
                    s["created_at"],
                    s["model_version"],
                    s["table"]["version"],
                    s["products"],
                    len(s["shards"]),
                    ", ".join(s["index"]),
                    s["gate"]["served"],
                    s["gate"]["stderr"],
                    s["gate"]["shard_min"],
                    s["gate"]["min_recall"],
                ]
            ],  # fmt: skip
        )
    )
    if s["sweep"]:
        sweep = s["sweep"]
        published = sweep["published"]
        parts.append(
            f"<p>Measured here on {sweep['queries']} of the surface's products (each leaving "
            f"itself out) against exact search, one thread. At the published settings: "
            f"recall@10 <b>{published['recall']:.3f}</b>, <b>{published['qps']:,.0f}</b> "
            f"queries/s.</p>"
        )
        parts.append(_img(images[f"{name}-recall"], f"{name}: recall@10 vs queries/s"))
        parts.append(
            _table(
                [sweep["key"], "recall@10", "queries/s"],
                [[p["setting"], p["recall"], p["qps"]] for p in sweep["points"]],
            )
        )
        parts.append(_img(images[f"{name}-scores"], f"{name}: neighbour scores"))
    parts.append(_img(images[f"{name}-shards"], f"{name}: shard sizes"))
    memory = s["memory"] or {}
    parts.append(
        _table(
            ["shard", "products", "vectors", "index", "index bytes", "own recall@10", "search"],
            [
                [
                    e["shard"],
                    e["count"],
                    e["vectors"],
                    e["index"],
                    e["index_bytes"],
                    e["recall_at_10"],
                    ", ".join(f"{k} {v}" for k, v in (e["search"] or {}).items()),
                ]
                for e in s["shards"]
            ],  # fmt: skip
        )
        + (
            f"<p class=note>index files {memory['index_bytes']:,} bytes, "
            f"{memory['bytes_per_vector']:.0f} per vector</p>"
            if memory.get("index_bytes") is not None
            else ""
        )
    )
    return "\n".join(parts)


def _model(model: dict, images: dict[str, str]) -> str:
    parts = [f"<h2>Model {escape(model['model_version'])}</h2>",
             f"<p class=note>{escape(model['path'])}</p>"]  # fmt: skip
    if "training" in images:
        parts.append(_img(images["training"], "training loss"))
    if model["heldout"]:
        parts.append(_img(images["heldout"], "held-out recall per task"))
    else:
        parts.append("<p>No held-out evaluation in this checkpoint (trained without a log).</p>")
    return "\n".join(parts)


def _runs(table: dict, images: dict[str, str]) -> str:
    parts = [f"<h2>Embedding runs of {escape(table['uri'])}</h2>"]
    if "runs" in images:
        parts.append(_img(images["runs"], "embedding runs"))
    parts.append(
        _table(
            [
                "version",
                "committed",
                "run",
                "rows in",
                "embedded",
                "carried over",
                "products",
                "quarantined",
                "embedded/s (embed stage)",
            ],  # fmt: skip
            [
                [
                    r["version"],
                    r["at"],
                    r["run_id"],
                    r["rows_in"],
                    r["embedded"],
                    r["carried_over"],
                    r["products"],
                    r["quarantined"],
                    r["embedded_per_s"],
                ]
                for r in reversed(table["runs"])
            ],  # fmt: skip
        )
    )
    return "\n".join(parts)


def render(report: dict, images: dict[str, str], created_at: str) -> str:
    """The page for a gathered report whose plots are the files named in `images`."""
    body = [
        "<h1>ItemSage run report</h1>",
        f"<p class=note>{escape(report['index_root'])}, written {escape(created_at)}; the "
        "figures are in report.json beside this page.</p>",
        *(_surface(name, s, images) for name, s in report["surfaces"].items()),
        _runs(report["table"], images),
    ]
    if report["model"]:
        body.append(_model(report["model"], images))
    return (
        "<!doctype html>\n<html><head><meta charset=utf-8><title>ItemSage run report</title>"
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
