"""The packed (unpadded) BERT forward against transformers' padded one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    DistilBertConfig,
)

import replicas.runtime as runtime_module
from replicas.packed_bert import (
    PackedBertClassifier,
    _attention,
    _mkldnn_bf16,
    _PrepackedLinear,
    _row_bucket,
    unsupported_reason,
)
from replicas.runtime import bf16_supported, load_runtime

TEXTS = [
    "where is my card",
    "I was charged twice for the same coffee and I would like the second payment "
    "refunded to my account as soon as possible please",
    "hi",
    "How long does a transfer to another bank take when I send it on a weekend?",
    "top up failed",
]


@pytest.fixture(scope="module")
def demo_runtimes(demo_model_dir: Path):
    padded = load_runtime(demo_model_dir, precision="fp32", packing=False)
    packed = load_runtime(demo_model_dir, precision="fp32", packing=True)
    return padded, packed


def _logits(runtime, texts: list[str]) -> torch.Tensor:
    items = runtime._encoder.encode(texts)
    with torch.inference_mode():
        if runtime.packed:
            return runtime._packed_logits(runtime._model, items)
        return runtime._padded_logits(runtime._model, items)


def test_bert_checkpoints_load_packed_unless_switched_off(demo_runtimes):
    padded, packed = demo_runtimes
    assert packed.packed and isinstance(packed._model, PackedBertClassifier)
    assert not padded.packed


@pytest.mark.parametrize(
    "texts",
    [TEXTS, TEXTS[:1], ["same length one", "same length two"]],
    ids=["unequal lengths", "one text", "equal lengths"],
)
def test_packed_logits_equal_the_padded_forward(demo_runtimes, texts):
    padded, packed = demo_runtimes
    if len(texts) == 2:  # the equal-lengths case must really be one
        assert len(set(padded.count_tokens(texts))) == 1
    expected = _logits(padded, texts)
    found = _logits(packed, texts)
    assert found.shape == expected.shape
    torch.testing.assert_close(found, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_compiled_forward_equals_the_eager_packed_one(demo_model_dir, precision):
    runtime = load_runtime(demo_model_dir, precision=precision, packing=True)
    assert runtime.scripted
    assert isinstance(runtime._forward, torch.jit.ScriptModule)
    for texts in (TEXTS, TEXTS[:1], ["same length one", "same length two"]):
        items = runtime._encoder.encode(texts)
        with torch.inference_mode(), torch.jit.optimized_execution(False):
            eager = runtime._packed_logits(runtime._model, items)
            compiled = runtime._packed_logits(runtime._forward, items)
        torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("group", [1, 2, 3, None], ids=lambda g: f"group={g}")
def test_attention_groups_give_the_padded_logits_in_any_text_order(
    demo_runtimes, demo_model_dir, group
):
    padded, _ = demo_runtimes
    grouped = load_runtime(demo_model_dir, precision="fp32", attention_group=group)
    # unequal lengths out of order, and a run of equal lengths (a group unpadded)
    texts = TEXTS[::-1] + TEXTS + ["same length one", "same length two"] * 2
    expected = _logits(padded, texts)
    items = grouped._encoder.encode(texts)
    with torch.inference_mode(), torch.jit.optimized_execution(False):
        for model in (grouped._model, grouped._forward):
            found = grouped._packed_logits(model, items)
            torch.testing.assert_close(found, expected, atol=1e-4, rtol=1e-4)


def test_cpu_weights_are_prepacked_unless_int8_or_switched_off(demo_model_dir):
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch has no oneDNN")
    fp32 = load_runtime(demo_model_dir, precision="fp32")
    assert fp32.prepacked
    layer = fp32._model.layers[0]
    for module in (layer.qkv, layer.intermediate, layer.output.dense):
        assert isinstance(module, _PrepackedLinear)
    assert layer.intermediate.post_op == "gelu"
    plain = load_runtime(demo_model_dir, precision="fp32", prepack_weights=False)
    assert plain.packed and not plain.prepacked
    assert type(plain._model.layers[0].qkv) is torch.nn.Linear
    assert not load_runtime(demo_model_dir, precision="int8").prepacked


def test_bf16_predicts_like_fp32(demo_model_dir, demo_test_texts):
    if not bf16_supported("cpu"):
        pytest.skip("this CPU has no native bf16")
    bf16 = load_runtime(demo_model_dir, precision="bf16")
    reference = load_runtime(demo_model_dir, precision="fp32", packing=False)
    assert bf16.scripted
    assert bf16.prepacked == (torch.backends.mkldnn.is_available() and _mkldnn_bf16())
    texts = [text for text, _ in demo_test_texts]
    got = [p.label for p in bf16.classify(texts)]
    want = [p.label for p in reference.classify(texts)]
    agreement = sum(a == b for a, b in zip(got, want, strict=True)) / len(want)
    assert agreement >= 0.98


def test_padded_models_are_not_compiled_and_compiling_can_be_switched_off(
    demo_runtimes, demo_model_dir
):
    padded, _ = demo_runtimes
    assert not padded.scripted
    eager = load_runtime(demo_model_dir, precision="fp32", compiled=False)
    assert eager.packed and not eager.scripted


def test_packed_predictions_match_padded_on_the_held_out_split(
    demo_runtimes, demo_test_texts
):
    padded, packed = demo_runtimes
    texts = [text for text, _ in demo_test_texts]
    want = padded.classify(texts, max_batch_size=32)
    got = packed.classify(texts, max_batch_size=32)
    assert [p.label for p in got] == [p.label for p in want]
    assert max(abs(a.score - b.score) for a, b in zip(got, want, strict=True)) < 1e-4
    assert [p.num_tokens for p in got] == [p.num_tokens for p in want]


def test_int8_quantises_the_packed_encoder_but_not_pooler_or_head(demo_model_dir):
    int8 = load_runtime(demo_model_dir, precision="int8", packing=True)
    assert int8.packed
    kinds = {name: type(m) for name, m in int8._model.named_modules()}
    quantised = torch.ao.nn.quantized.dynamic.Linear
    assert kinds["layers.0.qkv"] is quantised
    assert kinds["layers.5.output.dense"] is quantised
    assert kinds["pooler.dense"] is torch.nn.Linear
    assert kinds["classifier"] is torch.nn.Linear
    assert len(int8.classify(TEXTS)) == len(TEXTS)


def test_a_packed_forward_that_disagrees_is_not_used(demo_model_dir, monkeypatch):
    class Skewed(PackedBertClassifier):
        def forward(self, input_ids, lengths):
            return super().forward(input_ids, lengths) + torch.arange(
                float(self.classifier.out_features)
            )

    monkeypatch.setattr(runtime_module, "PackedBertClassifier", Skewed)
    runtime = load_runtime(demo_model_dir, precision="fp32", packing=True)
    assert not runtime.packed
    assert len(runtime.classify(TEXTS)) == len(TEXTS)


def _tiny(config_class, **kwargs):
    config = config_class(
        vocab_size=100,
        num_labels=3,
        **kwargs,
    )
    return AutoModelForSequenceClassification.from_config(config)


def test_other_architectures_are_not_packed():
    distil = _tiny(DistilBertConfig, dim=32, hidden_dim=64, n_layers=1, n_heads=2)
    assert "DistilBert" in (unsupported_reason(distil) or "")
    with pytest.raises(ValueError, match="cannot pack"):
        PackedBertClassifier(distil)
    bert = _tiny(
        BertConfig,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    assert unsupported_reason(bert) is None


def test_matrix_product_attention_equals_the_fused_kernel():
    # `_attention` takes queries already scaled by 1/sqrt(dim) (the packed layer
    # folds the scale into their weights) and one key-bias row per (text, head).
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 4, 2, 7, 8).unbind(0)  # [batch, heads, width, dim]
    lengths = torch.tensor([7, 3, 5, 1])
    real = torch.arange(7)[None, :] < lengths[:, None]
    bias = (
        torch.zeros(4, 1, 1, 7)
        .masked_fill(~real[:, None, None, :], torch.finfo(torch.float32).min)
        .expand(4, 2, 1, 7)
        .reshape(8, 1, 7)
    )
    expected = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=real[:, None, None, :]
    )
    scaled = q * 8**-0.5
    torch.testing.assert_close(_attention(scaled, k, v, bias), expected)
    torch.testing.assert_close(
        _attention(scaled, k, v, None),
        torch.nn.functional.scaled_dot_product_attention(q, k, v),
    )
    # One text: the fused kernel, told the scale is already applied.
    torch.testing.assert_close(
        _attention(scaled[:1], k[:1], v[:1], bias[:2]), expected[:1]
    )


def test_row_buckets_are_few_and_waste_little():
    buckets = {_row_bucket(tokens) for tokens in range(1, 8193)}
    assert len(buckets) == 96
    for tokens in (1, 16, 17, 256, 257, 1000, 8192):
        rows = _row_bucket(tokens)
        assert rows >= tokens and rows % 16 == 0
        assert rows - tokens < 16 or rows <= tokens * 17 / 16
