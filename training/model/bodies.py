"""Sequence bodies: HuggingFace Transformers fed through `inputs_embeds`, and a GRU baseline.

Every body maps embeddings [B, L, D] of right-padded sequences and their mask [B, L] to
hidden states [B, L, D]. Built from a small config (d_model, layers, heads, dropout,
positions), with scaled-dot-product attention where the library offers it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
import transformers as hf


@dataclass(frozen=True)
class BodyConfig:
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.1
    attention_dropout: float = 0.1  # on attention probabilities: costly on the CPU ([B, heads, L, L] masks)
    max_positions: int = 200  # position table size; the longest sequence the body accepts
    causal: bool = True  # CLM wants a causal body; MLM a bidirectional one (where the body offers both)
    attention: str = "sdpa"  # HF attention implementation: sdpa (scaled-dot-product) or eager
    positions: str = "from_start"  # absolute position ids: from_start (0 = first event) | from_end (0 = last event)


@dataclass(frozen=True)
class BodyKind:
    build: Callable[[BodyConfig], nn.Module]
    tasks: tuple[str, ...]  # training tasks the body can serve
    max_positions: int | None  # the architecture's default limit (HF's config default), None: unbounded


def _common(cfg: BodyConfig) -> dict:
    # no vocabulary: items come in as embeddings; no special token ids to validate
    return dict(vocab_size=1, pad_token_id=None, bos_token_id=None, eos_token_id=None, attn_implementation=cfg.attention)


def _bert_like(config_class, model_class, pooler: bool = True, embedding_size: bool = False, position_offset: int = 0, **extra):
    def build(cfg: BodyConfig) -> nn.Module:
        sizes = {"embedding_size": cfg.d_model} if embedding_size else {}
        config = config_class(
            hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
            intermediate_size=4 * cfg.d_model, hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.attention_dropout,
            max_position_embeddings=cfg.max_positions + position_offset, type_vocab_size=1,
            **{**_common(cfg), **sizes, **extra},
        )
        return model_class(config, add_pooling_layer=False) if pooler else model_class(config)
    return build


def _decoder(config_class, model_class):
    def build(cfg: BodyConfig) -> nn.Module:
        config = config_class(
            hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
            num_key_value_heads=cfg.n_heads, intermediate_size=4 * cfg.d_model, attention_dropout=cfg.attention_dropout,
            max_position_embeddings=cfg.max_positions, use_cache=False, **_common(cfg),
        )
        return model_class(config)
    return build


def _gpt2(cfg: BodyConfig) -> nn.Module:
    config = hf.GPT2Config(
        n_embd=cfg.d_model, n_layer=cfg.n_layers, n_head=cfg.n_heads, n_positions=cfg.max_positions,
        resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.attention_dropout, use_cache=False, **_common(cfg),
    )
    return hf.GPT2Model(config)


def _xlnet(cfg: BodyConfig) -> nn.Module:
    common = {k: v for k, v in _common(cfg).items() if k != "attn_implementation"}  # XLNet has no SDPA path
    config = hf.XLNetConfig(
        d_model=cfg.d_model, n_layer=cfg.n_layers, n_head=cfg.n_heads, d_inner=4 * cfg.d_model, dropout=cfg.dropout,
        attn_type="bi", use_mems_train=False, use_mems_eval=False, mem_len=None, **common,
    )
    return hf.XLNetModel(config)


class GRUBody(nn.Module):
    def __init__(self, cfg: BodyConfig):
        super().__init__()
        self.gru = nn.GRU(cfg.d_model, cfg.d_model, cfg.n_layers, batch_first=True, dropout=cfg.dropout if cfg.n_layers > 1 else 0.0)

    def forward(self, inputs_embeds, attention_mask=None, **_):
        hidden, _ = self.gru(inputs_embeds)  # right padding: pads come after every real step
        return hidden


ENCODER_TASKS = ("mlm", "rtd")
DECODER_TASKS = ("clm",)
BODIES: dict[str, BodyKind] = {
    "gpt2": BodyKind(_gpt2, DECODER_TASKS, 1024),
    "llama": BodyKind(_decoder(hf.LlamaConfig, hf.LlamaModel), DECODER_TASKS, 2048),
    "mistral": BodyKind(_decoder(hf.MistralConfig, hf.MistralModel), DECODER_TASKS, 32768),
    "qwen2": BodyKind(_decoder(hf.Qwen2Config, hf.Qwen2Model), DECODER_TASKS, 32768),
    "bert": BodyKind(_bert_like(hf.BertConfig, hf.BertModel), ENCODER_TASKS, 512),
    "roberta": BodyKind(_bert_like(hf.RobertaConfig, hf.RobertaModel, position_offset=2, pad_token_id=0), ENCODER_TASKS, 512),
    "albert": BodyKind(_bert_like(hf.AlbertConfig, hf.AlbertModel, embedding_size=True), ENCODER_TASKS, 512),
    "electra": BodyKind(_bert_like(hf.ElectraConfig, hf.ElectraModel, pooler=False, embedding_size=True), ENCODER_TASKS, 512),
    "xlnet": BodyKind(_xlnet, ("clm", "mlm", "plm"), None),
    "gru": BodyKind(GRUBody, DECODER_TASKS, None),
}


POSITIONS = ("from_start", "from_end")


def positions_like(mask: torch.Tensor) -> torch.Tensor:
    """Column numbers 0..L-1 of a [B, L] tensor, made from it: a trace then pins no device."""
    return torch.ones_like(mask, dtype=torch.long).cumsum(1) - 1


class BodyError(ValueError):
    pass


class SequenceBody(nn.Module):
    """A named body over right-padded sequences: position ids 0..n-1 on the real events."""

    def __init__(self, name: str, cfg: BodyConfig):
        super().__init__()
        if name not in BODIES:
            raise BodyError(f"architecture: unknown {name!r}; expected one of {sorted(BODIES)}")
        kind = BODIES[name]
        if kind.max_positions is not None and cfg.max_positions > kind.max_positions:
            raise BodyError(f"max length {cfg.max_positions} is above {name}'s limit of {kind.max_positions} positions")
        self.name = name
        self.model = kind.build(cfg)
        self.position_offset = 2 if name == "roberta" else 0  # RoBERTa's positions start after its padding index
        self.takes_positions = name not in ("xlnet", "gru")
        if cfg.positions not in POSITIONS:
            raise BodyError(f"positions: expected one of {list(POSITIONS)}, got {cfg.positions!r}")
        self.from_end = cfg.positions == "from_end"
        self.causal_by_perm_mask = name == "xlnet" and cfg.causal  # HF's attn_type="uni" breaks with padding masks

    def forward(self, embeds: torch.Tensor, mask: torch.Tensor, perm_mask: torch.Tensor | None = None,
                target_mapping: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states [B, L, D]; for XLNet's permutation LM, `perm_mask` [B, L, L] (1: event i
        does not see event j) and `target_mapping` [B, P, L] give the query stream's [B, P, D]."""
        if self.name == "gru":
            return self.model(embeds)
        kwargs = dict(inputs_embeds=embeds, attention_mask=mask.long())
        if perm_mask is not None:
            kwargs.update(perm_mask=perm_mask.float(), target_mapping=target_mapping.float())
        positions = positions_like(mask)
        if perm_mask is None and self.causal_by_perm_mask:  # perm_mask[b, i, j] = 1: event i does not see event j
            kwargs["perm_mask"] = (positions[:, None, :] > positions[:, :, None]).float()
        if self.takes_positions:
            if self.from_end:  # SASRec's left padding: the last event is always at one position, recency is explicit
                positions = (mask.sum(1, keepdim=True) - 1 - positions).clamp(min=0)
            kwargs["position_ids"] = positions + self.position_offset
        return self.model(**kwargs).last_hidden_state
