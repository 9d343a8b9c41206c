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
layer, so that one matrix multiply replaces three. The module is for inference
only (no dropout) and is written so that TorchScript compiles it
(`script_packed`): the compiled forward runs its ~150 operations without
returning to Python in between, which matters most for small batches and for a
forward that shares its process with a busy event loop.
"""

from __future__ import annotations

import logging
import warnings

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

# transformers' `hidden_act` names -> `approximate` of torch's GELU.
_ACTIVATIONS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}


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
    if config.hidden_act not in _ACTIVATIONS:
        return f"hidden_act {config.hidden_act!r}"
    return None


class PackedBertClassifier(nn.Module):
    """Logits of a batch of token-id sequences, computed on real tokens only.

    Module names keep the checkpoint's where int8 quantisation looks at them
    (`pooler`, `classifier`), so that it treats them as in the padded model.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"cannot pack this model: {reason}")
        bert = model.bert
        config = model.config
        self.num_heads = int(config.num_attention_heads)
        self.head_dim = int(config.hidden_size) // self.num_heads
        embeddings = bert.embeddings
        self.word_embeddings = embeddings.word_embeddings
        self.position_embeddings = embeddings.position_embeddings
        self.register_buffer(
            "token_type_embedding",
            embeddings.token_type_embeddings.weight[0].detach().clone(),
        )
        self.embedding_norm = embeddings.LayerNorm
        # Added to the attention scores of pad keys, which softmax then weighs as
        # nothing: the lowest value of the weights' dtype.
        self.mask_value = float(torch.finfo(self.word_embeddings.weight.dtype).min)
        approximate = _ACTIVATIONS[config.hidden_act]
        self.layers = nn.ModuleList(
            _PackedLayer(layer, self.num_heads, self.head_dim, approximate)
            for layer in bert.encoder.layer
        )
        self.pooler = _Pooler(bert.pooler.dense)
        self.classifier = model.classifier

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """`input_ids`: every sequence's ids end to end, `[tokens]`; `lengths`:
        tokens per sequence, `[batch]`. Returns logits `[batch, labels]`."""
        batch = lengths.numel()
        width = int(lengths.max().item())
        tokens = input_ids.numel()
        device = input_ids.device
        starts = torch.cumsum(lengths, 0) - lengths
        sequence = torch.repeat_interleave(torch.arange(batch, device=device), lengths)
        positions = torch.arange(tokens, device=device) - starts[sequence]
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embedding
        )
        x = self.embedding_norm(x)

        padded_index: torch.Tensor | None = None
        key_bias: torch.Tensor | None = None
        if tokens != batch * width:  # equal lengths: the packed rows are the padded
            padded_index = sequence * width + positions
            bias = torch.full(
                (batch * width,), self.mask_value, dtype=x.dtype, device=device
            )
            bias[padded_index] = 0.0
            key_bias = bias.view(batch, 1, 1, width)
        for layer in self.layers:
            x = layer(x, batch, width, padded_index, key_bias)
        return self.classifier(self.pooler(x[starts]))  # the pooler reads position 0


class _PackedLayer(nn.Module):
    """One encoder layer on packed rows; the attention step alone sees padding."""

    def __init__(
        self, layer: nn.Module, heads: int, head_dim: int, approximate: str
    ) -> None:
        super().__init__()
        attention = layer.attention.self
        self.heads = heads
        self.head_dim = head_dim
        self.qkv = _fused_linear(attention.query, attention.key, attention.value)
        self.attention_output = _DenseAddNorm(
            layer.attention.output.dense, layer.attention.output.LayerNorm
        )
        self.intermediate = _DenseGelu(layer.intermediate.dense, approximate)
        self.output = _DenseAddNorm(layer.output.dense, layer.output.LayerNorm)

    def forward(
        self,
        x: torch.Tensor,
        batch: int,
        width: int,
        padded_index: torch.Tensor | None,
        key_bias: torch.Tensor | None,
    ) -> torch.Tensor:
        """`padded_index`: packed row -> row of the padded `[batch * width]` view,
        None when they are the same; `key_bias`: `[batch, 1, 1, width]`."""
        qkv = self.qkv(x)  # [tokens, 3 * hidden]
        if padded_index is not None:
            padded = qkv.new_zeros(batch * width, qkv.shape[-1])
            padded[padded_index] = qkv
            qkv = padded
        views = qkv.view(batch, width, 3, self.heads, self.head_dim).permute(
            2, 0, 3, 1, 4
        )
        context = _attention(views[0], views[1], views[2], key_bias)
        context = context.transpose(1, 2).reshape(batch * width, -1)
        if padded_index is not None:
            context = context[padded_index]
        x = self.attention_output(context, x)
        return self.output(self.intermediate(x), x)


class _DenseAddNorm(nn.Module):
    """LayerNorm(dense(x) + residual): BERT's attention output and layer output."""

    def __init__(self, dense: nn.Linear, norm: nn.LayerNorm) -> None:
        super().__init__()
        self.dense = dense
        self.LayerNorm = norm  # noqa: N815 - the checkpoint's name

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _DenseGelu(nn.Module):
    def __init__(self, dense: nn.Linear, approximate: str) -> None:
        super().__init__()
        self.dense = dense
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x), approximate=self.approximate)


class _Pooler(nn.Module):
    def __init__(self, dense: nn.Linear) -> None:
        super().__init__()
        self.dense = dense

    def forward(self, first_tokens: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(first_tokens))


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
    scores = torch.matmul(q, k.transpose(-1, -2)) * (float(q.shape[-1]) ** -0.5)
    if key_bias is not None:
        scores = scores + key_bias
    weights = scores.softmax(-1, dtype=torch.float32).to(v.dtype)
    return torch.matmul(weights, v)


def script_packed(model: PackedBertClassifier) -> nn.Module:
    """`model` compiled by TorchScript, or `model` itself when that fails.

    Run it under `torch.jit.optimized_execution(False)`: TorchScript's optimising
    executor re-profiles and specialises the graph for new input shapes, and a
    server's batches all differ in shape; the plain interpreter keeps the gain of
    leaving Python (benchmarks/results/replica_throughput.json, BANKING77 texts,
    2 threads, int8: one text 1.67x the eager packed forward's texts/s, 8 texts
    1.49x, 32 texts 1.14x; bf16 1.13-1.28x; fp32 1.03-1.10x).
    """
    try:
        with warnings.catch_warnings():
            # Marked deprecated in favour of torch.compile, which needs a C++
            # compiler at run time; TorchScript is present and works in this torch.
            # TODO(#8): move when torch drops it; until then a failure keeps eager.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            return torch.jit.script(model)
    except Exception as exc:  # noqa: BLE001 - any compiler failure keeps eager
        logger.warning("event=packed_not_scripted error=%s", str(exc)[:200])
        return model


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
