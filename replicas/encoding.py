"""Texts to token ids, truncated to the model's limit, grouped by length.

Shared by every backend so that truncation, token counts and micro-batching are the
same whichever engine runs the forward pass. No torch here: padding is plain lists.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from transformers.tokenization_utils_base import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodedText:
    """One text's token ids after truncation (special tokens included)."""

    input_ids: tuple[int, ...]
    truncated: bool

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class PaddedBatch:
    """A micro-batch padded to its longest member; rows follow `EncodedText` order."""

    input_ids: list[list[int]]
    attention_mask: list[list[int]]
    token_type_ids: list[list[int]] | None


class TextEncoder:
    """Tokenises with truncation and reports, per text, whether it was cut.

    Shared by the threads of a pool's lanes: every call sets the tokenizer's
    truncation length, which the tokenizer keeps as shared state, so calls take
    turns instead of relying on the tokenizer to guard it.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length_tokens: int):
        if max_length_tokens < 2:
            raise ValueError(f"max_length_tokens must be >= 2, got {max_length_tokens}")
        self._tokenizer = tokenizer
        self._lock = threading.Lock()
        self.max_length_tokens = max_length_tokens
        pad_id = tokenizer.pad_token_id
        self._pad_token_id = int(pad_id) if pad_id is not None else 0
        self._uses_token_type_ids = "token_type_ids" in tokenizer.model_input_names

    def encode(self, texts: Sequence[str]) -> list[EncodedText]:
        """Token ids per text, cut to `max_length_tokens`, in input order."""
        if not texts:
            return []
        safe = [_encodable(text, i) for i, text in enumerate(texts)]

        # One token past the limit tells a text that fits exactly from one that was
        # cut; only the cut ones are tokenised again at the real limit.
        probe = self._tokenize(safe, self.max_length_tokens + 1)
        cut = [i for i, ids in enumerate(probe) if len(ids) > self.max_length_tokens]
        if cut:
            recut = self._tokenize([safe[i] for i in cut], self.max_length_tokens)
            for i, ids in zip(cut, recut, strict=True):
                probe[i] = ids
        cut_set = set(cut)
        return [
            EncodedText(input_ids=tuple(ids), truncated=i in cut_set)
            for i, ids in enumerate(probe)
        ]

    def pad(self, items: Sequence[EncodedText]) -> PaddedBatch:
        """Right-pads a micro-batch to its longest member."""
        width = max(item.num_tokens for item in items)
        input_ids = []
        attention_mask = []
        for item in items:
            pad = width - item.num_tokens
            input_ids.append([*item.input_ids, *([self._pad_token_id] * pad)])
            attention_mask.append([1] * item.num_tokens + [0] * pad)
        token_type_ids = (
            [[0] * width for _ in items] if self._uses_token_type_ids else None
        )
        return PaddedBatch(input_ids, attention_mask, token_type_ids)

    def _tokenize(self, texts: list[str], max_length: int) -> list[list[int]]:
        with self._lock:
            encoded = self._tokenizer(
                texts,
                truncation=True,
                max_length=max_length,
                padding=False,
                return_attention_mask=False,
                return_token_type_ids=False,
            )
        return [list(ids) for ids in encoded["input_ids"]]


def length_sorted_batches(
    lengths: Sequence[int], max_batch_size: int
) -> list[list[int]]:
    """Indices into `lengths`, shortest first, cut into micro-batches.

    Neighbours in length share a micro-batch, so each pads only to its own longest
    member instead of the longest text of the whole request.
    """
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [
        order[start : start + max_batch_size]
        for start in range(0, len(order), max_batch_size)
    ]


def _encodable(text: str, index: int) -> str:
    """The text, with lone surrogates replaced: the tokenizer rejects a whole batch
    for one such character."""
    if not isinstance(text, str):
        raise TypeError(f"texts[{index}] must be str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        logger.debug("event=text_replaced_unencodable index=%d", index)
        return text.encode("utf-8", "replace").decode("utf-8")
    return text
