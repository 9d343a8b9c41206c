"""BERT classification without padding: the tokens of a whole batch in one matrix.

A padded batch runs every dense layer on its pad positions too. On BANKING77 test
texts in batches of 32, the padded batch holds 2.07 positions per real token, and the
dense layers are nearly all of a short text's FLOPs. Here the dense layers (fused
query/key/value, attention output, feed-forward) run on a `[tokens, hidden]` matrix
of real tokens only; attention, the one step that mixes tokens within a text,
scatters query, key and value into a padded `[batch, heads, length, head_dim]` view,
masks the pad keys, and gathers the real rows back. It does so per group of 8
sequences, which the runtime hands over in length order, each group padded to its
own longest (at least 16): for batches of 64 shuffled BANKING77 test texts one
padded view holds 9.0x the attention work of the real tokens, groups of 16 hold
2.9x and groups of 8 2.0x.

On CPUs `prepack` also puts the dense weights in oneDNN's blocked layout once
(fp32, bf16) and pads the token rows to a few fixed counts, so that oneDNN's
per-shape kernels are built once and stay cached (`_row_bucket`).

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


# Sequences per attention group (PackedBertClassifier.forward). One thread, bf16,
# shuffled BANKING77 texts: 8 against 16 ran 1.09x at 16 texts a batch, 1.02x at
# 64 and 1.05x at 128; 4 and 32 were slower than 8. Two threads, compiled, whole
# classify calls: 0.97x at 8 texts, 1.09x at 32, 1.14x at 64.
ATTENTION_GROUP = 8
_ONE_GROUP = 1 << 30
# Attention rows of a group are padded (masked) to at least this width: torch's CPU
# softmax with fp32 output takes a slow path below 16 columns (16 texts x 12 heads,
# bf16 scores, one thread: 579 us at 14 columns, 57 us at 16).
_MIN_ATTENTION_WIDTH = 16


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

    def __init__(
        self, model: nn.Module, attention_group: int | None = ATTENTION_GROUP
    ) -> None:
        super().__init__()
        if attention_group is not None and attention_group < 1:
            raise ValueError(f"attention_group must be >= 1, got {attention_group}")
        # None: the whole batch is one group (an int for TorchScript's sake)
        self.attention_group = attention_group or _ONE_GROUP
        self.row_buckets = False  # set by prepack
        self.min_attention_width = _MIN_ATTENTION_WIDTH  # narrower ones are masked
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

    def prepack(self) -> bool:
        """Puts every dense layer's weights in oneDNN's own blocked layout, once,
        and fuses GELU into the intermediate layer's matrix product. Only on CPUs
        with oneDNN, for fp32 and bf16 weights (int8 quantises the plain Linears
        instead). Returns whether it did."""
        weight = self.word_embeddings.weight
        if (
            weight.device.type != "cpu"
            or weight.dtype not in (torch.float32, torch.bfloat16)
            or not torch.backends.mkldnn.is_available()
            or (weight.dtype == torch.bfloat16 and not _mkldnn_bf16())
        ):
            return False
        for layer in self.layers:
            layer.qkv = _PrepackedLinear(layer.qkv)
            layer.attention_output.dense = _PrepackedLinear(
                layer.attention_output.dense
            )
            layer.intermediate = _PrepackedLinear(
                layer.intermediate.dense, "gelu", layer.intermediate.approximate
            )
            layer.output.dense = _PrepackedLinear(layer.output.dense)
        self.pooler.dense = _PrepackedLinear(self.pooler.dense)
        self.classifier = _PrepackedLinear(self.classifier)
        self.row_buckets = True
        return True

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """`input_ids`: every sequence's ids end to end, `[tokens]`; `lengths`:
        tokens per sequence, `[batch]`. Returns logits `[batch, labels]`.

        Attention runs in groups of `attention_group` consecutive sequences, each
        padded to its own longest: sequences given in length order pad little."""
        batch = lengths.numel()
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
        if self.row_buckets:
            bucket = _row_bucket(tokens)
            if bucket > tokens:  # zero rows, never attended to nor read out
                x = F.pad(x, (0, 0, 0, bucket - tokens))

        sizes: list[int] = lengths.tolist()
        groups: list[_AttentionGroup] = []
        row = 0
        for first in range(0, batch, self.attention_group):
            last = min(first + self.attention_group, batch)
            width = max(sizes[first:last])
            if last - first > 1:  # one text takes the fused kernel (_attention)
                width = max(width, self.min_attention_width)
            rows = sum(sizes[first:last])
            padded_index: torch.Tensor | None = None
            key_bias: torch.Tensor | None = None
            if rows != (last - first) * width:  # equal lengths need no padding
                padded_index = (sequence[row : row + rows] - first) * width + positions[
                    row : row + rows
                ]
                bias = torch.full(
                    ((last - first) * width,),
                    self.mask_value,
                    dtype=x.dtype,
                    device=device,
                )
                bias[padded_index] = 0.0
                # One row per (sequence, head): baddbmm adds it to every query.
                key_bias = (
                    bias.view(last - first, 1, 1, width)
                    .expand(last - first, self.num_heads, 1, width)
                    .reshape((last - first) * self.num_heads, 1, width)
                )
            groups.append((row, rows, last - first, width, padded_index, key_bias))
            row += rows
        for layer in self.layers:
            x = layer(x, groups)
        return self.classifier(self.pooler(x[starts]))  # the pooler reads position 0


# One attention group: (first packed row, rows, sequences, padded width, packed row
# -> row of the padded `[sequences * width]` view or None when they are the same,
# key bias `[sequences * heads, 1, width]` or None).
_AttentionGroup = tuple[int, int, int, int, torch.Tensor | None, torch.Tensor | None]


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
        # Queries come out already divided by sqrt(head_dim), the scale of the
        # attention scores, which then need no multiply of their own.
        with torch.no_grad():
            for param in (self.qkv.weight, self.qkv.bias):
                if param is not None:
                    query = param[: heads * head_dim]
                    query.copy_(query.float() * head_dim**-0.5)
        self.attention_output = _DenseAddNorm(
            layer.attention.output.dense, layer.attention.output.LayerNorm
        )
        self.intermediate = _DenseGelu(layer.intermediate.dense, approximate)
        self.output = _DenseAddNorm(layer.output.dense, layer.output.LayerNorm)

    def forward(self, x: torch.Tensor, groups: list[_AttentionGroup]) -> torch.Tensor:
        qkv = self.qkv(x)  # [tokens, 3 * hidden]
        contexts: list[torch.Tensor] = []
        end = 0
        for first_row, rows, batch, width, padded_index, key_bias in groups:
            end = first_row + rows
            part = qkv[first_row:end]
            contexts.append(self._attend(part, batch, width, padded_index, key_bias))
        padding = x.shape[0] - end  # bucket rows (_row_bucket)
        if padding > 0:
            contexts.append(x.new_zeros(padding, x.shape[1]))
        context = contexts[0] if len(contexts) == 1 else torch.cat(contexts)
        x = self.attention_output(context, x)
        return self.output(self.intermediate(x), x)

    def _attend(
        self,
        qkv: torch.Tensor,
        batch: int,
        width: int,
        padded_index: torch.Tensor | None,
        key_bias: torch.Tensor | None,
    ) -> torch.Tensor:
        """Attention of one group's packed rows of `qkv`, back as packed rows."""
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
            context = context.index_select(0, padded_index)
        return context


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


class _PrepackedLinear(nn.Module):
    """A Linear, optionally followed by GELU, through oneDNN with its weights
    reordered once into the blocked layout the matrix kernels read.

    A plain bf16 Linear hands oneDNN a row-major weight that it reorders on
    each call (a 200x384 by 384x1152 product: 175 us plain, 81 us prepacked,
    2 threads, AMX). Together with the attention groups and row buckets the
    compiled bf16 BANKING77 forward ran 1.39x (one text) to 2.05x (64 texts) the
    forward without them (benchmarks/results/replica_throughput.md,
    compiled against compiled-plain, Intel Xeon with AMX, 2 threads); int8,
    which keeps its quantised Linears, 0.96-1.37x; fp32 1.00-1.23x."""

    def __init__(
        self, linear: nn.Module, post_op: str = "none", algorithm: str = ""
    ) -> None:
        super().__init__()
        weight = linear.weight.detach()
        self.out_features, self.in_features = (int(n) for n in weight.shape)
        self.register_buffer(
            "weight", torch.ops.mkldnn._reorder_linear_weight(weight, _PACKING_ROWS)
        )
        bias = linear.bias
        self.bias = (
            None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
        )
        self.post_op = post_op  # "none" or "gelu"
        self.algorithm = algorithm  # GELU's: "none" (erf) or "tanh"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(
            x, self.weight, self.bias, self.post_op, [], self.algorithm
        )


def _row_bucket(tokens: int) -> int:
    """`tokens` rounded up to a multiple of 16, or above 256 to one of 16 steps
    per doubling (at most 1/16 more).

    oneDNN builds and caches a kernel per matrix shape, and a server's batches
    hold every token count: on 2 threads a 384x1536 bf16 product took 2.3-3.2 ms
    the first time for a row count against 0.4 ms once cached, and its cache
    holds 1,024 kernels. Rounded, 8,192 tokens take 96 counts."""
    step = 16
    while step * 32 < tokens:
        step *= 2
    return (tokens + step - 1) // step * step


# The rows a prepacked weight's layout is chosen for (oneDNN takes it as a hint;
# any batch runs).
_PACKING_ROWS = 64


def _mkldnn_bf16() -> bool:
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class _Pooler(nn.Module):
    def __init__(self, dense: nn.Linear) -> None:
        super().__init__()
        self.dense = dense

    def forward(self, first_tokens: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(first_tokens))


def _attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_bias: torch.Tensor | None
) -> torch.Tensor:
    """softmax(q k^T + key_bias) v over `[batch, heads, width, dim]`, with q
    already scaled and `key_bias` `[batch * heads, 1, width]`.

    On GPUs, and for a single text, torch's fused kernel. For a batch on a CPU,
    batched matrix products, the first adding the key bias as it multiplies
    (baddbmm): the fused CPU kernel measured 2.5x slower than plain products for
    BERT-small shapes (32 texts of 25 tokens, 12 heads of 32; 1.3 against 0.5 ms a
    layer on 2 threads), where it was a third of the whole forward pass; for one
    text it was the faster (356 against 328 texts/s, int8).
    """
    batch, heads, width, dim = q.shape
    if q.is_cuda or batch == 1:
        mask = None if key_bias is None else key_bias.view(batch, heads, 1, width)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
    q = q.reshape(batch * heads, width, dim)
    k = k.reshape(batch * heads, width, dim).transpose(1, 2)
    if key_bias is None:
        scores = torch.bmm(q, k)
    else:
        scores = torch.baddbmm(key_bias, q, k)
    weights = scores.softmax(-1, dtype=torch.float32).to(v.dtype)
    context = torch.bmm(weights, v.reshape(batch * heads, width, dim))
    return context.view(batch, heads, width, dim)


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
