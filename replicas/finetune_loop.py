"""The fine-tuning loop: bf16 autocast steps over length-bucketed batches, a linear
warm-up/decay, and early stopping on validation that keeps the best epoch's weights.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from replicas.finetune_data import (
    accuracy,
    batches_per_epoch,
    bucketed_batches,
    sorted_batches,
)

if TYPE_CHECKING:
    from replicas.finetune import FinetuneConfig

logger = logging.getLogger(__name__)

_EVAL_BATCH_SIZE = 128


@dataclass(frozen=True)
class LoopOutcome:
    best_state: dict[str, torch.Tensor]
    best_epoch: int
    epochs_run: int
    steps: int
    history: list[dict[str, float]]
    train_s: float


def _optimizer(model: torch.nn.Module, config: FinetuneConfig) -> torch.optim.AdamW:
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        lr = config.head_lr if name.startswith("classifier.") else config.lr
        no_decay = name.endswith("bias") or "LayerNorm" in name
        decay = 0.0 if no_decay else config.weight_decay
        groups.setdefault((lr, decay), []).append(param)
    return torch.optim.AdamW(
        [{"params": p, "lr": lr, "weight_decay": wd} for (lr, wd), p in groups.items()]
    )


def _linear_schedule(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        remaining = total_steps - step
        return max(0.0, remaining / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def predict(
    model: torch.nn.Module, token_ids: list[list[int]], labels: list[int], bf16: bool
) -> tuple[list[int], float]:
    """Predicted class ids in row order and the mean cross-entropy loss."""
    model.eval()
    predicted = [0] * len(token_ids)
    loss_sum = 0.0
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        for rows, batch in sorted_batches(token_ids, _EVAL_BATCH_SIZE):
            logits = model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask
            ).logits.float()
            target = torch.tensor([labels[i] for i in rows])
            loss_sum += torch.nn.functional.cross_entropy(
                logits, target, reduction="sum"
            ).item()
            for row, cls in zip(rows, logits.argmax(dim=-1).tolist(), strict=True):
                predicted[row] = cls
    return predicted, loss_sum / len(token_ids)


def _improved(metric: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value > best if metric == "accuracy" else value < best


def train_loop(
    model: torch.nn.Module,
    config: FinetuneConfig,
    train_ids: list[list[int]],
    train_labels: list[int],
    val_ids: list[list[int]],
    val_labels: list[int],
) -> LoopOutcome:
    """Trains up to `config.epochs`, scoring validation after each epoch."""
    per_epoch = batches_per_epoch(len(train_ids), config.batch_size)
    total_steps = per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    warmup_steps = max(1, round(total_steps * config.warmup_fraction))
    optimizer = _optimizer(model, config)
    schedule = _linear_schedule(optimizer, warmup_steps, total_steps)
    batch_rng = random.Random(config.seed)

    best_value: float | None = None
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch = 0
    history: list[dict[str, float]] = []
    epochs_without_gain = 0
    step = 0
    epochs_run = 0
    train_started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        epochs_run = epoch
        epoch_started = time.perf_counter()
        seen = 0
        smoothed_loss: float | None = None
        bar = tqdm(
            bucketed_batches(train_ids, train_labels, config.batch_size, batch_rng),
            total=min(per_epoch, total_steps - step),
            desc=f"epoch {epoch}/{config.epochs}",
            disable=not config.progress,
            file=sys.stderr,
            unit="batch",
        )
        for batch in bar:
            if step >= total_steps:
                break
            with torch.autocast("cpu", torch.bfloat16, enabled=config.bf16):
                logits = model(
                    input_ids=batch.input_ids, attention_mask=batch.attention_mask
                ).logits
            loss = torch.nn.functional.cross_entropy(logits.float(), batch.labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            seen += len(batch.labels)
            value = loss.item()
            smoothed_loss = (
                value if smoothed_loss is None else 0.9 * smoothed_loss + 0.1 * value
            )
            rate = seen / max(1e-9, time.perf_counter() - epoch_started)
            bar.set_postfix(loss=f"{smoothed_loss:.3f}", seq_s=f"{rate:.0f}")
        bar.close()

        predicted, val_loss = predict(model, val_ids, val_labels, config.bf16)
        val_accuracy = accuracy(predicted, val_labels)
        history.append(
            {
                "epoch": epoch,
                "val_accuracy": val_accuracy,
                "val_loss": val_loss,
                "epoch_s": time.perf_counter() - epoch_started,
            }
        )
        logger.info(
            "event=finetune_epoch epoch=%d val_accuracy=%.4f val_loss=%.4f "
            "epoch_s=%.1f",
            epoch,
            val_accuracy,
            val_loss,
            history[-1]["epoch_s"],
        )
        current = val_accuracy if config.early_stop_metric == "accuracy" else val_loss
        if _improved(config.early_stop_metric, current, best_value):
            best_value, best_epoch, epochs_without_gain = current, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            epochs_without_gain += 1
            if epochs_without_gain >= config.patience_epochs:
                logger.info("event=finetune_early_stop epoch=%d", epoch)
                break
        if step >= total_steps:
            break
    assert best_state is not None  # at least one epoch always runs
    return LoopOutcome(
        best_state=best_state,
        best_epoch=best_epoch,
        epochs_run=epochs_run,
        steps=step,
        history=history,
        train_s=time.perf_counter() - train_started,
    )
