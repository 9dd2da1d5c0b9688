"""The model's inputs: per-event features (item, categorical, continuous, content vectors) and per-sequence
context, embedded and aggregated into one vector per event [B, L, d_model]."""
from __future__ import annotations

import torch
from torch import nn

from training.model.configuration import ModelConfig
from training.model.features import FeatureSpec


class SoftOneHot(nn.Module):
    """A continuous value as a softmax-weighted mix of learned bin embeddings."""

    def __init__(self, bins: int, dim: int):
        super().__init__()
        self.projection = nn.Linear(1, bins)
        self.bins = nn.Embedding(bins, dim)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.projection(values.unsqueeze(-1)), dim=-1)
        return weights @ self.bins.weight


class SequenceInputs(nn.Module):
    """Per-event features (item, categorical, continuous) plus per-sequence context -> [B, L, d_model]."""

    def __init__(self, spec: FeatureSpec, config: ModelConfig, pretrained: torch.Tensor | None = None):
        super().__init__()
        self.spec = spec
        summing = config.aggregation == "element-wise-sum"
        side_dim = config.d_model if summing else config.feature_dim
        # one extra row after the catalog: the [MASK] code of MLM, looked up and then replaced by
        # `mask_embedding`, which starts at zero so that a masked event's state comes from its
        # context rather than from a constant input that drowns it (as Transformers4Rec masks)
        self.item_embedding = nn.Embedding(spec.item_cardinality + 1, config.d_model, padding_idx=0)
        self.mask_code = spec.item_cardinality
        self.mask_embedding = nn.Parameter(torch.zeros(config.d_model))
        self.categorical = nn.ModuleDict({name: nn.Embedding(n, side_dim, padding_idx=0) for name, n in spec.categorical.items()})
        encode = (lambda: nn.Linear(1, side_dim)) if config.continuous_encoding == "linear" else (lambda: SoftOneHot(config.soft_one_hot_bins, side_dim))
        self.continuous = nn.ModuleDict({name: encode() for name in spec.continuous})
        self.context_categorical = nn.ModuleDict({name: nn.Embedding(n, side_dim) for name, n in spec.context_categorical.items()})
        self.context_continuous = nn.ModuleDict({name: encode() for name in spec.context_continuous})
        self.pretrained = None
        if pretrained is not None:  # content vectors of items (text, image), a side feature of each event
            self.pretrained = nn.Sequential(
                nn.Embedding.from_pretrained(pretrained.float(), freeze=config.freeze_pretrained, padding_idx=0),
                nn.Linear(pretrained.shape[1], side_dim),
            )
        n_side = (len(self.categorical) + len(self.continuous) + len(self.context_categorical)
                  + len(self.context_continuous) + int(self.pretrained is not None))
        self.project = None if summing or n_side == 0 else nn.Linear(config.d_model + n_side * side_dim, config.d_model)
        self.norm = nn.LayerNorm(config.d_model) if config.input_norm else nn.Identity()
        self.dropout = nn.Dropout(config.dropout)
        for module in self.modules():
            if isinstance(module, nn.Embedding) and (self.pretrained is None or module is not self.pretrained[0]):  # small scores at the start, as HF initialises token tables
                nn.init.normal_(module.weight, std=0.02)
                if module.padding_idx is not None:
                    nn.init.zeros_(module.weight[module.padding_idx])
        for encoder in [*self.continuous.values(), *self.context_continuous.values()]:
            if isinstance(encoder, nn.Linear):  # at the embeddings' scale: torch's default (weights up to 1 from one input)
                nn.init.normal_(encoder.weight, std=0.02)  # drowned the 0.02 item vectors, six time features stalled training
                nn.init.zeros_(encoder.bias)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        items = batch[self.spec.item]
        parts = [self.item_embedding(items)]
        parts += [self.categorical[name](batch[name]) for name in self.categorical]
        if self.pretrained is not None:
            parts.append(self.pretrained(items.clamp(max=self.spec.item_cardinality - 1)))  # [MASK]: replaced below
        parts += [_encode_continuous(self.continuous[name], batch[name]) for name in self.continuous]
        length = items.shape[1]
        parts += [self.context_categorical[name](batch[name]).unsqueeze(1).expand(-1, length, -1) for name in self.context_categorical]
        parts += [_encode_continuous(self.context_continuous[name], batch[name]).unsqueeze(1).expand(-1, length, -1)
                  for name in self.context_continuous]
        if self.project is None:
            embeds = torch.stack(parts).sum(0)
        else:
            embeds = self.project(torch.cat(parts, dim=-1))
        embeds = self.dropout(self.norm(embeds))
        masked = items == self.mask_code
        return torch.where(masked.unsqueeze(-1), self.mask_embedding.to(embeds.dtype), embeds)


def _encode_continuous(encoder: nn.Module, values: torch.Tensor) -> torch.Tensor:
    values = values.float()
    return encoder(values.unsqueeze(-1)) if isinstance(encoder, nn.Linear) else encoder(values)
