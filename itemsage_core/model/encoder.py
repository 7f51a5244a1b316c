"""The ItemSage encoder: images and text features -> one 256-d L2-normalised product embedding.

Sequence: a learned [CLS] token, one token per image (projected from the frozen image embedding),
one per text feature (its hash-embedding bag, projected per feature) and one per dense feature (a
frozen pretrained embedding such as a sentence encoder's, projected per feature), each input token
layer-normalised and given a feature-type embedding; padding, missing images, empty text bags and
absent dense features are masked out of attention. Then `layers` pre-norm transformer encoder
layers, a final LayerNorm on [CLS] and a 2-layer MLP to the output, L2-normalised.

`forward(batch)` computes the last layer for the [CLS] position only: its keys and values still
come from every token, but the query, attention output and feed-forward only from [CLS]. Since
only [CLS] is read out this is exactly the full computation (`forward(batch, cls_only=False)`),
and cheaper, so training and inference both use it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from itemsage_core.features.product_features import ProductBatch
from itemsage_core.features.vocabulary import FEATURES
from itemsage_core.model.config import ModelConfig
from itemsage_core.model.hash_embedding import HashEmbedding


class EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer with an optional [CLS]-only output."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ffn = nn.Sequential(
            nn.Linear(d, ffn), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn, d)
        )
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        return x.view(b, s, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, keep: torch.Tensor, cls_only: bool = False) -> torch.Tensor:
        """x (b, s, d), keep (b, s) True for real tokens; returns (b, s, d) or (b, 1, d)."""
        d = x.shape[-1]
        h = self.norm1(x)
        w, bias = self.qkv.weight, self.qkv.bias
        if cls_only:
            x = x[:, :1]
            q = F.linear(h[:, :1], w[:d], bias[:d])
            k, v = F.linear(h, w[d:], bias[d:]).chunk(2, dim=-1)
        else:
            q, k, v = F.linear(h, w, bias).chunk(3, dim=-1)
        attended = F.scaled_dot_product_attention(
            self._split(q),
            self._split(k),
            self._split(v),
            attn_mask=keep[:, None, None, :],
            dropout_p=self.dropout.p if self.training else 0.0,
        )
        attended = attended.transpose(1, 2).reshape(x.shape)
        x = x + self.dropout(self.out(attended))
        return x + self.dropout(self.ffn(self.norm2(x)))


class ItemSageEncoder(nn.Module):
    """Products -> (b, output_dim) unit vectors; see the module docstring."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        d, n_features = config.d_model, len(FEATURES)
        self.text_embedding = HashEmbedding(
            config.vocab_size,
            config.hash_buckets,
            config.hash_dim,
            [list(p) for p in config.hash_params],
        )
        self.image_proj = nn.Linear(config.image_dim, d)
        self.text_proj_weight = nn.Parameter(
            torch.randn(n_features, config.hash_dim, d) * config.hash_dim**-0.5
        )
        self.text_proj_bias = nn.Parameter(torch.zeros(n_features, d))
        self.input_norm = nn.LayerNorm(d)
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        # Feature types: 0 = image, 1..F = the text features in FEATURES order.
        self.feature_type = nn.Parameter(torch.randn(1 + n_features, d) * 0.02)
        # Dense features (none in a model without them, whose checkpoints load as they are).
        self.dense_proj = nn.ModuleList(nn.Linear(dim, d) for _, dim in config.dense)
        if config.dense:
            self.dense_type = nn.Parameter(torch.randn(len(config.dense), d) * 0.02)
        self.layers = nn.ModuleList(
            EncoderLayer(d, config.heads, config.ffn_dim, config.dropout)
            for _ in range(config.layers)
        )
        self.final_norm = nn.LayerNorm(d)
        self.head = nn.Sequential(
            nn.Linear(d, config.mlp_hidden),
            nn.ReLU(),
            nn.Linear(config.mlp_hidden, config.output_dim),
        )
        self.log_temperature = nn.Parameter(torch.tensor(float(config.initial_temperature)).log())

    def tokens(self, batch: ProductBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Input sequence (b, 1 + m + F + D, d) and its keep mask (b, 1 + m + F + D)."""
        b, n_features = batch.size, len(FEATURES)
        image_mask, text_mask = batch.image_mask, batch.text_mask
        if "image" not in self.config.modalities:
            image_mask = torch.zeros_like(image_mask)
        if "text" not in self.config.modalities:
            text_mask = torch.zeros_like(text_mask)
        bags = self.text_embedding(batch.token_ids, batch.bag_offsets).view(b, n_features, -1)
        text = torch.einsum("bfh,fhd->bfd", bags, self.text_proj_weight) + self.text_proj_bias
        images = self.image_proj(batch.images)
        tokens, masks = [images, text], [image_mask, text_mask]
        types = [self.feature_type[:1].expand(images.shape[1], -1), self.feature_type[1:]]
        if self.config.dense:
            tokens.append(
                torch.stack([proj(v) for proj, v in zip(self.dense_proj, batch.dense)], dim=1)
            )
            masks.append(batch.dense_mask)
            types.append(self.dense_type)
        inputs = self.input_norm(torch.cat(tokens, dim=1))
        x = torch.cat([self.cls.expand(b, -1, -1), inputs + torch.cat(types)], dim=1)
        keep = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=x.device), *masks], dim=1)
        return x, keep

    def forward(self, batch: ProductBatch, cls_only: bool = True) -> torch.Tensor:
        x, keep = self.tokens(batch)
        for i, layer in enumerate(self.layers):
            x = layer(x, keep, cls_only=cls_only and i == len(self.layers) - 1)
        cls = self.final_norm(x[:, 0])
        return F.normalize(self.head(cls), dim=-1)

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp().clamp(min=0.01, max=1.0)
