"""The BERT classifier every replica runs: checkpoint in, labels and scores out.

`load_runtime` picks a backend. The torch backend (`ClassifierRuntime`) is the
default; the vLLM backend subclasses it and replaces only model loading and the
forward pass, so tokenisation, truncation, length-bucketed micro-batches and the
`Prediction` shape are the same for both. The torch backend runs BERT checkpoints
packed, without padding (`replicas.packed_bert`), and any other architecture padded.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoModelForSequenceClassification

from gateway.errors import CheckpointError, ConfigError
from replicas.checkpoint import Checkpoint, inspect_checkpoint
from replicas.encoding import EncodedText, TextEncoder, length_sorted_batches
from replicas.packed_bert import (
    ATTENTION_GROUP,
    PackedBertClassifier,
    script_packed,
    unsupported_reason,
)

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "vllm")
PRECISIONS = ("auto", "fp32", "bf16", "int8")

_TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.float32}
# The packed forward must match the padded one on these texts of unequal lengths
# before it is used, within this fraction of the largest logit (the probe runs
# before int8 quantisation, so int8 is compared in fp32).
_PACKING_PROBE = ("ok", "where is the card I ordered two weeks ago?", "refund please")
_PACKING_TOLERANCE = {"fp32": 1e-4, "int8": 1e-4, "bf16": 5e-2}
# Missing keys under these prefixes mean the classification head was never saved.
_HEAD_PREFIXES = ("classifier", "score", "pre_classifier", "out_proj")


@dataclass(frozen=True)
class Prediction:
    """The top label of one text, with what truncation did to it."""

    label: str
    score: float  # probability of `label`
    truncated: bool
    num_tokens: int  # real tokens incl. special tokens, after truncation
    probabilities: tuple[float, ...] | None = None  # order = runtime.labels


class ClassifierRuntime:
    """A fine-tuned `*ForSequenceClassification` checkpoint on one device (torch)."""

    backend = "torch"

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        precision: str = "auto",
        device: str = "auto",
        num_threads: int | None = None,
        packing: bool = True,
        compiled: bool = True,
        prepack_weights: bool = True,
        attention_group: int | None = ATTENTION_GROUP,
    ) -> None:
        self._setup_common(checkpoint, num_threads)
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        model = _load_torch_model(checkpoint, self.dtype)
        if packing:
            model = self._packed_if_equal(model, attention_group, prepack_weights)
        if self.dtype == "int8":
            model = _quantize_int8(model)
        self._model = model.to(self.device)
        # What runs the batches: the packed model compiled (TorchScript), else the
        # model itself; `_model` stays the eager module.
        self._forward: torch.nn.Module = self._model
        if compiled and isinstance(self._model, PackedBertClassifier):
            self._forward = script_packed(self._model)
        logger.info(
            "event=runtime_loaded backend=torch model=%s device=%s dtype=%s "
            "packed=%s prepacked=%s scripted=%s threads=%d labels=%d "
            "max_length_tokens=%d",
            self.model_name,
            self.device,
            self.dtype,
            self.packed,
            self.prepacked,
            self.scripted,
            self.num_threads,
            len(self.labels),
            self.max_length_tokens,
        )

    def _setup_common(self, checkpoint: Checkpoint, num_threads: int | None) -> None:
        """What every backend shares: labels, limits, encoder, FLOPs, threads."""
        self.checkpoint = checkpoint
        self.labels: tuple[str, ...] = checkpoint.labels
        self.max_length_tokens: int = checkpoint.max_length_tokens
        self.model_name: str = checkpoint.model_name
        self._multi_label = checkpoint.multi_label
        self._encoder = TextEncoder(checkpoint.tokenizer, checkpoint.max_length_tokens)
        self._non_embedding_params = _count_non_embedding_params(checkpoint)
        self._num_layers = int(checkpoint.config.num_hidden_layers)
        self._hidden_size = int(checkpoint.config.hidden_size)
        self.num_threads = num_threads or _available_cores()
        if self.num_threads < 1:
            raise ConfigError(f"num_threads must be >= 1, got {self.num_threads}")
        torch.set_num_threads(self.num_threads)

    def classify(
        self,
        texts: Sequence[str],
        *,
        return_probabilities: bool = False,
        max_batch_size: int = 64,
    ) -> list[Prediction]:
        """Top label per text, in input order; long texts are cut, never refused."""
        encoded = self._encoder.encode(texts)
        predictions: list[Prediction | None] = [None] * len(encoded)
        lengths = [item.num_tokens for item in encoded]
        for batch in length_sorted_batches(lengths, max_batch_size):
            items = [encoded[i] for i in batch]
            rows = self._probabilities(items)
            for index, item, probs in zip(batch, items, rows, strict=True):
                predictions[index] = self._prediction(item, probs, return_probabilities)
        return [p for p in predictions if p is not None]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Real tokens per text after truncation, special tokens included."""
        return [item.num_tokens for item in self._encoder.encode(texts)]

    def flops_per_sequence(self, num_tokens: int) -> float:
        """Forward FLOPs of one sequence: dense layers plus attention scores."""
        dense = 2.0 * self._non_embedding_params * num_tokens
        attention = 4.0 * self._num_layers * num_tokens**2 * self._hidden_size
        return dense + attention

    prepacked = False
    """Whether the packed forward's weights are in oneDNN's layout (`prepack`)."""

    @property
    def packed(self) -> bool:
        """Whether batches run without padding (`replicas.packed_bert`)."""
        return isinstance(self._model, PackedBertClassifier)

    @property
    def scripted(self) -> bool:
        """Whether batches run through TorchScript (`script_packed`)."""
        return self._forward is not self._model

    def _probabilities(self, items: Sequence[EncodedText]) -> list[list[float]]:
        """Class probabilities per item of one micro-batch (rows in item order)."""
        # The optimising executor would re-specialise a compiled forward for each
        # new batch shape (script_packed); the flag is this thread's own.
        with torch.inference_mode(), torch.jit.optimized_execution(False):
            if self.packed:
                logits = self._packed_logits(self._forward, items)
            else:
                logits = self._padded_logits(self._forward, items)
            logits = logits.float()
            probs = torch.sigmoid(logits) if self._multi_label else logits.softmax(-1)
        return probs.cpu().tolist()

    def _padded_logits(
        self, model: torch.nn.Module, items: Sequence[EncodedText]
    ) -> torch.Tensor:
        padded = self._encoder.pad(items)
        inputs = {
            "input_ids": torch.tensor(padded.input_ids, device=self.device),
            "attention_mask": torch.tensor(padded.attention_mask, device=self.device),
        }
        if padded.token_type_ids is not None:
            inputs["token_type_ids"] = torch.tensor(
                padded.token_type_ids, device=self.device
            )
        return model(**inputs).logits

    def _packed_logits(
        self, model: torch.nn.Module, items: Sequence[EncodedText]
    ) -> torch.Tensor:
        # In length order, so that each attention group pads to near its own
        # lengths (PackedBertClassifier.forward); rows come back in item order.
        order = sorted(range(len(items)), key=lambda i: items[i].num_tokens)
        input_ids = torch.tensor(
            [token for i in order for token in items[i].input_ids], device=self.device
        )
        lengths = torch.tensor([items[i].num_tokens for i in order], device=self.device)
        logits = model(input_ids, lengths)
        if order == list(range(len(order))):
            return logits
        return logits[torch.argsort(torch.tensor(order, device=self.device))]

    def _packed_if_equal(
        self,
        model: torch.nn.Module,
        attention_group: int | None,
        prepack_weights: bool,
    ) -> torch.nn.Module:
        """The packed form of `model` when it has one and agrees with the padded
        forward on a probe batch of unequal lengths; else `model` unchanged."""
        reason = unsupported_reason(model)
        if reason is None:
            packed = PackedBertClassifier(model, attention_group).eval()
            # int8 quantises the plain Linears instead
            prepacked = prepack_weights and self.dtype != "int8" and packed.prepack()
            probe = self._encoder.encode(list(_PACKING_PROBE))
            with torch.inference_mode():
                expected = self._padded_logits(model, probe).float()
                found = self._packed_logits(packed, probe).float()
            tolerance = _PACKING_TOLERANCE[self.dtype] * max(
                1.0, float(expected.abs().max())
            )
            error = float((expected - found).abs().max())
            if error <= tolerance:
                self.prepacked = prepacked
                return packed
            reason = f"packed logits differ by {error:.3g} (allowed {tolerance:.3g})"
        logger.info("event=runtime_padded model=%s reason=%s", self.model_name, reason)
        return model

    def _prediction(
        self, item: EncodedText, probs: list[float], return_probabilities: bool
    ) -> Prediction:
        best = max(range(len(probs)), key=probs.__getitem__)
        return Prediction(
            label=self.labels[best],
            score=float(probs[best]),
            truncated=item.truncated,
            num_tokens=item.num_tokens,
            probabilities=tuple(probs) if return_probabilities else None,
        )


def load_runtime(
    checkpoint_dir: str | Path,
    *,
    backend: str = "torch",
    precision: str = "auto",
    device: str = "auto",
    num_threads: int | None = None,
    packing: bool = True,
    compiled: bool = True,
    prepack_weights: bool = True,
    attention_group: int | None = ATTENTION_GROUP,
) -> ClassifierRuntime:
    """Validates the checkpoint and loads it on the chosen backend.

    `packing` lets the torch backend run BERT batches without padding, and
    `compiled` runs those through TorchScript; `prepack_weights` and
    `attention_group` tune the packed forward (`PackedBertClassifier`; None: one
    attention group per batch). vLLM schedules its own batches and ignores them all.

    Raises:
        CheckpointError: the directory is missing, incomplete or not a classifier.
        ConfigError: an unknown backend, precision or device, or a backend whose
            optional package is not installed.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    checkpoint = inspect_checkpoint(checkpoint_dir)
    if backend == "vllm":
        from replicas.vllm_backend import VllmClassifierRuntime

        return VllmClassifierRuntime(
            checkpoint, precision=precision, device=device, num_threads=num_threads
        )
    return ClassifierRuntime(
        checkpoint,
        precision=precision,
        device=device,
        num_threads=num_threads,
        packing=packing,
        compiled=compiled,
        prepack_weights=prepack_weights,
        attention_group=attention_group,
    )


def resolve_device(device: str) -> str:
    """`auto` is CUDA when present, else the CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} asked for, but CUDA is not present")
        return device
    raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")


def resolve_precision(precision: str, device: str) -> str:
    """Turns `auto` into a concrete dtype and refuses combinations that cannot run.

    `auto` is bf16 on GPUs with bf16 and on CPUs with native bf16 matmul
    (avx512_bf16 or AMX), else fp32: on this project's reference CPU (avx512_bf16)
    bf16 measured faster than fp32 (benchmarks/results/replica_throughput.md).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    on_gpu = device.startswith("cuda")
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    if precision == "int8" and on_gpu:
        raise ConfigError("precision 'int8' is CPU only (dynamic quantisation)")
    if precision == "bf16" and not bf16_supported(device):
        raise ConfigError(f"precision 'bf16' is not supported on device {device!r}")
    return precision


def bf16_supported(device: str) -> bool:
    """Whether this device has native bf16 arithmetic."""
    if device.startswith("cuda"):
        return bool(torch.cuda.is_bf16_supported())
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _load_torch_model(checkpoint: Checkpoint, dtype: str) -> torch.nn.Module:
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            checkpoint.path,
            dtype=_TORCH_DTYPES[dtype],
            local_files_only=True,
            output_loading_info=True,
        )
    except (OSError, ValueError, RuntimeError, EOFError, SafetensorError) as exc:
        raise CheckpointError(
            f"checkpoint {str(checkpoint.path)!r}: weights do not load: {exc}"
        ) from exc
    missing_head = sorted(
        key for key in info["missing_keys"] if key.startswith(_HEAD_PREFIXES)
    )
    if missing_head:
        raise CheckpointError(
            f"checkpoint {str(checkpoint.path)!r}: the classification head is not in "
            f"the weights (missing {', '.join(missing_head)})"
        )
    return model.eval()


def _quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 for the encoder's Linear layers; pooler and head stay fp32.

    Per-channel weight scales and an fp32 head each raised top-label agreement with
    fp32 on BANKING77 texts (260 -> 268 of 300 with the demo model) at no cost in
    speed; the head is a few thousand multiply-adds per text.
    """
    quantization = torch.ao.quantization
    spec = {
        name: quantization.per_channel_dynamic_qconfig
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and "pooler" not in name
        and not name.startswith(_HEAD_PREFIXES)
    }
    with warnings.catch_warnings():
        # torch marks its eager quantisation API deprecated in favour of torchao,
        # which is not a dependency; the API is present and works in this torch.
        warnings.filterwarnings("ignore", message=r".*quantiz", category=UserWarning)
        warnings.filterwarnings(
            "ignore", message=r".*quantiz", category=DeprecationWarning
        )
        return quantization.quantize_dynamic(model, spec, dtype=torch.qint8)


def _count_non_embedding_params(checkpoint: Checkpoint) -> int:
    """Parameters outside embedding tables, counted on a weightless (meta) copy."""
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(checkpoint.config)
    total = sum(p.numel() for p in model.parameters())
    embeddings = sum(
        p.numel()
        for module in model.modules()
        if isinstance(module, torch.nn.Embedding)
        for p in module.parameters(recurse=False)
    )
    return total - embeddings
