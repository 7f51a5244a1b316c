"""A synthetic shopping world: a catalog and an engagement log with known latent structure.

The generative process is documented in docs/synthetic-world.md. In short: products belong to
latent concepts; each product's latent vector mixes its concept with attribute vectors, some
visible only in text (brand, material), some only in images (visual style), some in both (color,
pattern); image embeddings are noisy views; engagement queries are noisy projections of the
engaged product's latent vector into an image-query space (home, closeup) or a text-query space
(search), sampled with popularity skew; conversions are sparse. Deterministic for (seed, sizes).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pyarrow as pa

from itemsage_core.contracts.catalog_contract import MAX_IMAGES, catalog_schema
from itemsage_core.contracts.engagement_contract import ENGAGEMENTS, SURFACES, engagement_schema

# (category path, google product category, nouns, sizes, has size_type)
TAXONOMY = [
    (
        "Women > Clothing > Dresses",
        "Apparel & Accessories > Clothing",
        ["dress", "maxi dress", "sundress"],
        ["XS", "S", "M", "L", "XL"],
        True,
    ),
    (
        "Women > Clothing > Tops",
        "Apparel & Accessories > Clothing",
        ["blouse", "tee", "tank top"],
        ["XS", "S", "M", "L", "XL"],
        True,
    ),
    (
        "Men > Clothing > Shirts",
        "Apparel & Accessories > Clothing",
        ["shirt", "oxford shirt", "polo"],
        ["S", "M", "L", "XL", "XXL"],
        True,
    ),
    (
        "Men > Clothing > Jackets",
        "Apparel & Accessories > Clothing > Outerwear",
        ["jacket", "parka", "bomber"],
        ["S", "M", "L", "XL"],
        True,
    ),
    (
        "Women > Shoes > Sneakers",
        "Apparel & Accessories > Shoes",
        ["sneaker", "trainer", "running shoe"],
        ["36", "37", "38", "39", "40", "41"],
        False,
    ),
    (
        "Men > Shoes > Boots",
        "Apparel & Accessories > Shoes",
        ["boot", "chelsea boot", "hiking boot"],
        ["40", "41", "42", "43", "44", "45"],
        False,
    ),
    (
        "Accessories > Bags > Handbags",
        "Apparel & Accessories > Handbags",
        ["handbag", "tote", "crossbody bag"],
        ["one size"],
        False,
    ),
    (
        "Accessories > Jewelry > Necklaces",
        "Apparel & Accessories > Jewelry",
        ["necklace", "pendant", "choker"],
        ["one size"],
        False,
    ),
    (
        "Home > Decor > Vases",
        "Home & Garden > Decor",
        ["vase", "bud vase", "planter"],
        ["small", "medium", "large"],
        False,
    ),
    (
        "Home > Bedding > Throw Blankets",
        "Home & Garden > Linens & Bedding",
        ["throw", "blanket", "quilt"],
        ["50x60 in", "60x80 in"],
        False,
    ),
    (
        "Home > Furniture > Chairs",
        "Furniture > Chairs",
        ["armchair", "accent chair", "stool"],
        ["one size"],
        False,
    ),
    (
        "Home > Lighting > Lamps",
        "Home & Garden > Lighting",
        ["table lamp", "floor lamp", "pendant light"],
        ["one size"],
        False,
    ),
    (
        "Kitchen > Cookware > Pans",
        "Home & Garden > Kitchen & Dining",
        ["skillet", "saucepan", "wok"],
        ["8 in", "10 in", "12 in"],
        False,
    ),
    (
        "Kitchen > Tableware > Mugs",
        "Home & Garden > Kitchen & Dining",
        ["mug", "cup", "tumbler"],
        ["12 oz", "16 oz"],
        False,
    ),
    (
        "Beauty > Skincare > Moisturizers",
        "Health & Beauty > Personal Care",
        ["moisturizer", "face cream", "serum"],
        ["30 ml", "50 ml"],
        False,
    ),
    (
        "Sports > Yoga > Mats",
        "Sporting Goods > Exercise & Fitness",
        ["yoga mat", "exercise mat", "travel mat"],
        ["4 mm", "6 mm"],
        False,
    ),
]
COLORS = [
    "black",
    "white",
    "red",
    "navy",
    "blue",
    "green",
    "olive",
    "beige",
    "brown",
    "pink",
    "purple",
    "yellow",
    "orange",
    "grey",
    "teal",
    "burgundy",
]
PATTERNS = [
    "solid",
    "striped",
    "floral",
    "checked",
    "polka dot",
    "geometric",
    "animal print",
    "paisley",
]
MATERIALS = [
    "cotton",
    "linen",
    "wool",
    "silk",
    "leather",
    "suede",
    "polyester",
    "denim",
    "ceramic",
    "glass",
    "oak",
    "stainless steel",
]
SIZE_TYPES = ["regular", "petite", "plus", "tall"]
COUNTRIES = (["US", "GB", "DE", "FR", "IN"], [0.55, 0.15, 0.12, 0.10, 0.08])

# Noise of an image view relative to the product's clean (unit) image vector.
IMAGE_NOISE = 0.5
# Query spaces and noise per surface: (query space, weight of the concept, latent noise), the
# noise relative to the unit intent vector.
SURFACE_QUERIES = {
    "home": ("image", 1.0, 1.2),
    "closeup": ("image", 0.0, 1.4),
    "search": ("text", 0.3, 1.4),
}
SURFACE_SHARE = {"home": 0.45, "closeup": 0.35, "search": 0.20}
ENGAGEMENT_SHARE = {
    "home": [0.72, 0.20, 0.06, 0.02],
    "closeup": [0.70, 0.22, 0.06, 0.02],
    "search": [0.84, 0.08, 0.06, 0.02],
}
# Conversions express a sharper intent: less latent noise than clicks and saves.
ENGAGEMENT_NOISE = {"click": 1.0, "save": 0.95, "add_to_cart": 0.85, "checkout": 0.8}
POPULARITY_EXPONENT = {"home": 1.0, "closeup": 0.7, "search": 0.8}
START = dt.datetime(2026, 10, 1, tzinfo=dt.timezone.utc)


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """Sizes and knobs of a synthetic world (the defaults are those of `itemsage generate`)."""

    products: int = 20_000
    seed: int = 0
    engagements_per_product: float = 5.0
    image_dim: int = 256
    query_dim: int = 256
    latent_dim: int = 32
    products_per_concept: int = 40
    mean_images: float = 4.0
    days: int = 28


@dataclasses.dataclass
class World:
    config: WorldConfig
    catalog: pa.Table
    engagements: pa.Table


def _product_ids(indices) -> list[str]:
    return [f"P{i:08d}" for i in indices]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _pseudo_words(rng: np.random.Generator, count: int) -> list[str]:
    """Pronounceable made-up words (brands and concept vocabulary), unique, deterministic."""
    onsets = [
        "b",
        "c",
        "d",
        "f",
        "g",
        "k",
        "l",
        "m",
        "n",
        "p",
        "r",
        "s",
        "t",
        "v",
        "z",
        "br",
        "ch",
        "cl",
        "dr",
        "fl",
        "gr",
        "pl",
        "sh",
        "st",
        "tr",
    ]
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "io", "ou"]
    codas = ["", "", "n", "r", "s", "l", "x", "nd", "rk"]
    words: dict[str, None] = {}
    while len(words) < count:
        syllables = rng.integers(2, 4)
        word = (
            "".join(
                onsets[rng.integers(len(onsets))] + vowels[rng.integers(len(vowels))]
                for _ in range(syllables)
            )
            + codas[rng.integers(len(codas))]
        )
        words.setdefault(word, None)
    return list(words)


def _zipf_weights(
    rng: np.random.Generator, n: int, exponent: float, order: np.ndarray
) -> np.ndarray:
    ranks = np.empty(n)
    ranks[order] = np.arange(1, n + 1)
    w = ranks**-exponent
    return w / w.sum()


def generate_world(config: WorldConfig = WorldConfig()) -> World:
    """Generate the catalog and engagement tables of a world (conformed contract schemas)."""
    n, L = config.products, config.latent_dim
    if n < 1:
        raise ValueError("a world needs at least one product")
    structure, products, images, engagements = (
        np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(4)
    )

    # Latent structure shared by products: concepts and attribute vectors.
    n_concepts = max(4, n // config.products_per_concept)
    n_brands = max(20, n // 150)
    concept_vec = structure.standard_normal((n_concepts, L))
    concept_cat = structure.integers(len(TAXONOMY), size=n_concepts)
    concept_words = np.array(_pseudo_words(structure, 4 * n_concepts)).reshape(n_concepts, 4)
    brand_names = [w.capitalize() for w in _pseudo_words(structure, n_brands)]
    attr = {
        k: structure.standard_normal((m, L))
        for k, m in [
            ("color", len(COLORS)),
            ("pattern", len(PATTERNS)),
            ("material", len(MATERIALS)),
            ("brand", n_brands),
            ("style", 12),
        ]
    }
    image_proj = structure.standard_normal((L, config.image_dim)) / np.sqrt(L)
    query_proj = {
        "image": structure.standard_normal((L, config.query_dim)) / np.sqrt(L),
        "text": structure.standard_normal((L, config.query_dim)) / np.sqrt(L),
    }

    # Products: concept and attributes; the latent vector mixes them.
    concept = products.integers(n_concepts, size=n)
    pick = {k: products.integers(len(v), size=n) for k, v in attr.items()}
    text_only = 0.9 * attr["brand"][pick["brand"]] + 0.7 * attr["material"][pick["material"]]
    image_only = 1.0 * attr["style"][pick["style"]]
    both = 0.6 * attr["color"][pick["color"]] + 0.5 * attr["pattern"][pick["pattern"]]
    latent = _unit(
        1.5 * concept_vec[concept]
        + text_only
        + image_only
        + both
        + 0.2 * products.standard_normal((n, L))
    )

    # Images: 0..20 noisy views of the visible part (concept, style, color, pattern).
    n_images = np.minimum(products.poisson(config.mean_images, size=n), MAX_IMAGES)
    visible = _unit(_unit(1.5 * concept_vec[concept] + image_only + both) @ image_proj)
    owner = np.repeat(np.arange(n), n_images)
    noise = images.standard_normal((len(owner), config.image_dim)) / np.sqrt(config.image_dim)
    views = _unit(visible[owner] + IMAGE_NOISE * noise).astype(np.float32)

    catalog = _catalog_table(
        config, products, concept, concept_cat, concept_words, brand_names, pick, n_images, views
    )
    log = _engagement_table(
        config,
        engagements,
        latent,
        _unit(concept_vec[concept]),
        query_proj,
        catalog.column("in_stock").to_numpy(),
    )
    return World(config=config, catalog=catalog, engagements=log)


def _catalog_table(
    config, rng, concept, concept_cat, concept_words, brand_names, pick, n_images, views
) -> pa.Table:
    n = config.products
    ids = _product_ids(range(n))
    cats = concept_cat[concept]
    noun_pick = rng.integers(3, size=n)
    size_pick = rng.integers(1 << 30, size=n)
    first_word = rng.integers(4, size=n)
    word_pick = np.stack([first_word, (first_word + rng.integers(1, 4, size=n)) % 4], axis=1)
    show_pattern = rng.random(n) < 0.5
    second_color = np.where(rng.random(n) < 0.2, rng.integers(len(COLORS), size=n), -1)
    titles, descriptions, sizes, size_types, product_types, gpcs, domains, links = (
        [],
        [],
        [],
        [],
        [],
        [],
        [],
        [],
    )
    colors, materials, patterns = [], [], []
    for i in range(n):
        path, gpc, nouns, size_list, sized = TAXONOMY[cats[i]]
        noun = nouns[noun_pick[i]]
        brand = brand_names[pick["brand"][i]]
        color, material = COLORS[pick["color"][i]], MATERIALS[pick["material"][i]]
        pattern = PATTERNS[pick["pattern"][i]]
        w1, w2 = concept_words[concept[i], word_pick[i]]
        titles.append(
            f"{brand} {color} {pattern + ' ' if show_pattern[i] else ''}{material} {noun}"
        )
        descriptions.append(
            f"A {w1} {noun} in {color} {material}, {pattern} finish. "
            f"{w2.capitalize()} {w1} style for every day."
        )
        sizes.append(size_list[size_pick[i] % len(size_list)])
        size_types.append(SIZE_TYPES[size_pick[i] % 4] if sized else None)
        product_types.append(path)
        gpcs.append(gpc)
        domain = f"{brand.lower()}.example.com"
        domains.append(domain)
        links.append([f"https://{domain}/p/{ids[i]}"])
        colors.append([color] + ([COLORS[second_color[i]]] if second_color[i] >= 0 else []))
        materials.append([material])
        patterns.append([pattern])
    offsets = np.concatenate([[0], np.cumsum(n_images)]).astype(np.int32)
    vec_offsets = np.arange(0, views.size + 1, config.image_dim, dtype=np.int32)
    image_embeddings = pa.ListArray.from_arrays(
        offsets, pa.ListArray.from_arrays(vec_offsets, pa.array(views.reshape(-1)))
    )
    countries, shares = COUNTRIES
    price_base = 10 + 8 * cats
    extras = {
        "country": pa.array(np.array(countries)[rng.choice(len(countries), size=n, p=shares)]),
        "in_stock": pa.array(rng.random(n) < 0.9),
        "price": pa.array(np.round(price_base * rng.lognormal(0.0, 0.5, size=n), 2)),
    }
    columns = {
        "product_id": ids,
        "title": titles,
        "description": descriptions,
        "brand": [brand_names[b] for b in pick["brand"]],
        "colors": colors,
        "materials": materials,
        "patterns": patterns,
        "size": sizes,
        "size_type": size_types,
        "product_type": product_types,
        "google_product_category": gpcs,
        "merchant_domain": domains,
        "links": links,
        "image_embeddings": image_embeddings,
        **extras,
    }
    extra_schema = pa.schema([pa.field(k, v.type) for k, v in extras.items()])
    return pa.table(columns, schema=catalog_schema(extra_schema))


def _engagement_table(config, rng, latent, concept_latent, query_proj, in_stock) -> pa.Table:
    n = config.products
    total = int(round(config.engagements_per_product * n))
    popularity_order = rng.permutation(n)
    surface = rng.choice(len(SURFACES), size=total, p=[SURFACE_SHARE[s] for s in SURFACES])
    engagement = np.empty(total, dtype=np.int64)
    product = np.empty(total, dtype=np.int64)
    queries = np.empty((total, config.query_dim), dtype=np.float32)
    for s_idx, s in enumerate(SURFACES):
        rows = np.flatnonzero(surface == s_idx)
        engagement[rows] = rng.choice(len(ENGAGEMENTS), size=len(rows), p=ENGAGEMENT_SHARE[s])
        weights = _zipf_weights(rng, n, POPULARITY_EXPONENT[s], popularity_order)
        space, concept_weight, noise = SURFACE_QUERIES[s]
        for e_idx, e in enumerate(ENGAGEMENTS):
            sub = rows[engagement[rows] == e_idx]
            w = weights * in_stock if e in ("add_to_cart", "checkout") else weights
            product[sub] = rng.choice(n, size=len(sub), p=w / w.sum())
            intent = _unit(latent[product[sub]] + concept_weight * concept_latent[product[sub]])
            sigma = noise * ENGAGEMENT_NOISE[e] / np.sqrt(intent.shape[1])
            intent = intent + sigma * rng.standard_normal(intent.shape)
            queries[sub] = _unit(intent @ query_proj[space])
    seconds = rng.integers(0, config.days * 86_400, size=total)
    ts = np.datetime64(START.replace(tzinfo=None), "us") + seconds.astype("timedelta64[s]")
    vec_offsets = np.arange(0, queries.size + 1, config.query_dim, dtype=np.int32)
    return pa.table(
        {
            "query_embedding": pa.ListArray.from_arrays(vec_offsets, pa.array(queries.reshape(-1))),
            "product_id": pa.array(_product_ids(product)),
            "surface": pa.array(np.array(SURFACES)[surface]),
            "engagement": pa.array(np.array(ENGAGEMENTS)[engagement]),
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
        },
        schema=engagement_schema(),
    )
