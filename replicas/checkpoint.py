"""Checks a fine-tuned classifier directory before any backend loads it.

Every failure becomes a `CheckpointError` that names the directory and what is wrong
with it, so a replica that cannot start says why instead of raising a deep
transformers traceback.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoConfig, AutoTokenizer, PretrainedConfig
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from gateway.errors import CheckpointError

logger = logging.getLogger(__name__)

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model")

# A tokenizer without a configured limit reports this huge sentinel.
_UNSET_MAX_LENGTH = 10**9


@dataclass(frozen=True)
class Checkpoint:
    """A validated checkpoint: config, tokenizer, label order and token limit."""

    path: Path
    config: PretrainedConfig
    tokenizer: PreTrainedTokenizerBase
    labels: tuple[str, ...]
    max_length_tokens: int
    multi_label: bool

    @property
    def model_name(self) -> str:
        return self.path.name


def inspect_checkpoint(checkpoint_dir: str | Path) -> Checkpoint:
    """Validates `checkpoint_dir` as a sequence classifier and reads its label map."""
    path = Path(checkpoint_dir).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint directory {str(path)!r} does not exist")
    if not path.is_dir():
        raise CheckpointError(f"checkpoint path {str(path)!r} is not a directory")
    path = path.resolve()

    config = _read_config(path)
    _require_classifier(path, config)
    labels = _labels(path, config)
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise CheckpointError(
            f"checkpoint {str(path)!r} has no weights: expected one of "
            f"{', '.join(WEIGHT_FILES)}"
        )
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise CheckpointError(
            f"checkpoint {str(path)!r} has no tokenizer: expected one of "
            f"{', '.join(TOKENIZER_FILES)}"
        )

    tokenizer = _load_tokenizer(path)
    return Checkpoint(
        path=path,
        config=config,
        tokenizer=tokenizer,
        labels=labels,
        max_length_tokens=_max_length_tokens(path, config, tokenizer),
        multi_label=config.problem_type == "multi_label_classification",
    )


def _load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: tokenizer does not load: {exc}"
        ) from exc


def _read_config(path: Path) -> PretrainedConfig:
    config_path = path / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} has no config.json")
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: config.json is not valid JSON: {exc}"
        ) from exc
    if not isinstance(raw, dict) or "model_type" not in raw:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: config.json has no 'model_type' field"
        )
    try:
        return AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: config.json does not load: {exc}"
        ) from exc


def _require_classifier(path: Path, config: PretrainedConfig) -> None:
    architectures = list(config.architectures or [])
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a sequence classifier: architectures="
            f"{architectures}; fine-tune it first (bertgw finetune)"
        )
    if config.num_labels < 2:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: num_labels={config.num_labels}, a classifier "
            "needs at least 2"
        )


def _labels(path: Path, config: PretrainedConfig) -> tuple[str, ...]:
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    expected_ids = set(range(config.num_labels))
    if set(id2label) != expected_ids:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: id2label ids {sorted(id2label)} do not cover "
            f"0..{config.num_labels - 1}"
        )
    labels = tuple(id2label[i] for i in range(config.num_labels))
    if len(set(labels)) != len(labels):
        raise CheckpointError(f"checkpoint {str(path)!r}: id2label repeats a label")
    return labels


def _max_length_tokens(
    path: Path, config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase
) -> int:
    """The smaller of the tokenizer's limit and the position embeddings."""
    limits = []
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < _UNSET_MAX_LENGTH:
        limits.append(tokenizer_limit)
    if not limits:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: neither config.max_position_embeddings nor "
            "the tokenizer's model_max_length gives a token limit"
        )
    return min(limits)
