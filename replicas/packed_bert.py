"""BERT classification without padding: the tokens of a whole batch in one matrix.

A padded batch runs every dense layer on its pad positions too. On BANKING77 test
texts in batches of 32, the padded batch holds 2.07 positions per real token, and the
dense layers are nearly all of a short text's FLOPs. Here the dense layers (fused
query/key/value, attention output, feed-forward) run on a `[tokens, hidden]` matrix
of real tokens only; attention, the one step that mixes tokens within a text,
scatters query, key and value into a padded `[batch, heads, length, head_dim]` view,
masks the pad keys, and gathers the real rows back.

Only `BertForSequenceClassification` with absolute positions is packed; anything
else keeps the padded forward (`unsupported_reason` says why). The weights are the
checkpoint's own modules; only query, key and value are copied into one Linear per
layer, so that one matrix multiply replaces three.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def unsupported_reason(model: nn.Module) -> str | None:
    """Why `model` cannot run packed, or None when it can."""
    from transformers import BertForSequenceClassification

    if type(model) is not BertForSequenceClassification:
        return f"{type(model).__name__} is not BertForSequenceClassification"
    config = model.config
    position_type = getattr(config, "position_embedding_type", "absolute")
    if position_type not in (None, "absolute"):
        return f"position_embedding_type {position_type!r}"
    if config.is_decoder:
        return "a decoder configuration"
    if model.bert.pooler is None:
        return "no pooler"
    return None


class PackedBertClassifier(nn.Module):
    """Logits of a batch of token-id sequences, computed on real tokens only.

    Module names keep the checkpoint's (`pooler`, `classifier`) so that int8
    quantisation treats them as it treats the padded model.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"cannot pack this model: {reason}")
        bert = model.bert
        config = model.config
        self.hidden_size = int(config.hidden_size)
        self.num_heads = int(config.num_attention_heads)
        self.head_dim = self.hidden_size // self.num_heads
        self.embeddings = bert.embeddings
        self.layers = nn.ModuleList(_PackedLayer(layer) for layer in bert.encoder.layer)
        self.pooler = bert.pooler
        self.dropout = model.dropout  # identity in eval mode; kept for the layout
        self.classifier = model.classifier

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """`input_ids`: every sequence's ids end to end, `[tokens]`; `lengths`:
        tokens per sequence, `[batch]`. Returns logits `[batch, labels]`."""
        batch = int(lengths.numel())
        width = int(lengths.max())
        tokens = int(input_ids.numel())
        starts = torch.cumsum(lengths, 0) - lengths
        sequence = torch.repeat_interleave(
            torch.arange(batch, device=input_ids.device), lengths
        )
        positions = torch.arange(tokens, device=input_ids.device) - starts[sequence]
        embeddings = self.embeddings
        x = (
            embeddings.word_embeddings(input_ids)
            + embeddings.position_embeddings(positions)
            + embeddings.token_type_embeddings.weight[0]
        )
        x = embeddings.dropout(embeddings.LayerNorm(x))

        if tokens == batch * width:  # equal lengths: the packed rows are the padded
            padded_index = None
            key_bias = None
        else:
            padded_index = sequence * width + positions
            # Added to the attention scores: 0 on real keys, the dtype's lowest
            # value on pad keys, which softmax then weighs as nothing.
            key_bias = torch.full(
                (batch * width,),
                torch.finfo(x.dtype).min,
                dtype=x.dtype,
                device=x.device,
            )
            key_bias[padded_index] = 0.0
            key_bias = key_bias.view(batch, 1, 1, width)
        shape = _AttentionShape(
            batch, width, self.num_heads, self.head_dim, padded_index, key_bias
        )
        for layer in self.layers:
            x = layer(x, shape)
        first_tokens = x[starts].unsqueeze(1)  # the pooler reads position 0
        return self.classifier(self.dropout(self.pooler(first_tokens)))


@dataclass(frozen=True, slots=True)
class _AttentionShape:
    """How one batch's packed rows map onto the padded attention view."""

    batch: int
    width: int  # tokens of the longest sequence
    heads: int
    head_dim: int
    padded_index: torch.Tensor | None  # packed row -> padded row; None: identical
    key_bias: torch.Tensor | None  # [batch, 1, 1, width], 0 on real tokens


class _PackedLayer(nn.Module):
    """One encoder layer on packed rows; the attention step alone sees padding."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        attention = layer.attention.self
        self.qkv = _fused_linear(attention.query, attention.key, attention.value)
        self.attention_output = layer.attention.output  # dense, dropout, LayerNorm
        self.intermediate = layer.intermediate  # dense and activation
        self.output = layer.output  # dense, dropout, LayerNorm

    def forward(self, x: torch.Tensor, shape: _AttentionShape) -> torch.Tensor:
        qkv = self.qkv(x)  # [tokens, 3 * hidden]
        if shape.padded_index is not None:
            padded = qkv.new_zeros(shape.batch * shape.width, qkv.shape[-1])
            padded[shape.padded_index] = qkv
            qkv = padded
        q, k, v = qkv.view(
            shape.batch, shape.width, 3, shape.heads, shape.head_dim
        ).permute(2, 0, 3, 1, 4)
        context = _attention(q, k, v, shape.key_bias)
        context = context.transpose(1, 2).reshape(shape.batch * shape.width, -1)
        if shape.padded_index is not None:
            context = context[shape.padded_index]
        x = self.attention_output(context, x)
        return self.output(self.intermediate(x), x)


def _attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_bias: torch.Tensor | None
) -> torch.Tensor:
    """softmax(q k^T / sqrt(head_dim) + key_bias) v over `[batch, heads, width, dim]`.

    On GPUs, and for a single text, torch's fused kernel. For a batch on a CPU,
    plain matrix products: the fused CPU kernel measured 2.5x slower than them for
    BERT-small shapes (32 texts of 25 tokens, 12 heads of 32; 1.3 against 0.5 ms a
    layer on 2 threads), where it was a third of the whole forward pass; for one
    text it was the faster (356 against 328 texts/s, int8).
    """
    if q.is_cuda or q.shape[0] == 1:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=key_bias)
    scores = torch.matmul(q, k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    if key_bias is not None:
        scores = scores + key_bias
    weights = scores.softmax(-1, dtype=torch.float32).to(v.dtype)
    return torch.matmul(weights, v)


def _fused_linear(*linears: nn.Linear) -> nn.Linear:
    """One Linear whose output is the given Linears' outputs side by side."""
    first = linears[0]
    fused = nn.Linear(
        first.in_features,
        sum(linear.out_features for linear in linears),
        bias=first.bias is not None,
        device=first.weight.device,
        dtype=first.weight.dtype,
    )
    with torch.no_grad():
        fused.weight.copy_(torch.cat([linear.weight for linear in linears]))
        if first.bias is not None:
            fused.bias.copy_(torch.cat([linear.bias for linear in linears]))
    return fused
