"""No-op servers that speak the gateway's wire protocol, to measure the harness itself.

They answer every infer request at once with a valid OIP v2 response (label, score,
truncated per text) naming a cloud in turn from `--clouds`, and serve `/metrics` with
the gateway's replica and cost gauges, so every part of the harness runs against
them. They do no inference: they exist so that harness capacity is measured against
a server that costs as little as possible. Bound to 127.0.0.1 only.

    python -m loadtest.noop_server --http-port 0 --grpc-port 0

prints one JSON line with the ports once both listen, and stops on SIGTERM, SIGINT
or after `--max-lifetime-s`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import select
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
LABEL = "noop"
_STARTUP_TIMEOUT_S = 30.0


class NoopState:
    """Counts requests, picks the cloud for each answer, decides injected errors."""

    def __init__(self, clouds: list[str], error_every: int, delay_s: float) -> None:
        self.clouds = clouds
        self._cycle = itertools.cycle(clouds)
        self.error_every = error_every
        self.delay_s = delay_s
        self.requests = 0

    def next(self) -> tuple[str, bool]:
        """(cloud, whether this request gets an injected 503/UNAVAILABLE)."""
        self.requests += 1
        failing = self.error_every > 0 and self.requests % self.error_every == 0
        return next(self._cycle), failing


def count_json_texts(payload: dict[str, Any]) -> int:
    """Number of BYTES elements in an OIP v2 JSON request's first input."""
    data = payload["inputs"][0]["data"]

    def count(value: Any) -> int:
        if isinstance(value, list):
            return sum(count(v) for v in value)
        return 1

    return count(data)


def count_raw_texts(raw: bytes) -> int:
    """Number of length-prefixed BYTES elements in one raw_input_contents entry."""
    count = 0
    offset = 0
    while offset + 4 <= len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4 + length
        count += 1
    return count


def oip_answer(model: str, n: int, cloud: str) -> dict[str, Any]:
    return {
        "model_name": model,
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [n], "data": [LABEL] * n},
            {"name": "score", "datatype": "FP32", "shape": [n], "data": [1.0] * n},
            {
                "name": "truncated",
                "datatype": "BOOL",
                "shape": [n],
                "data": [False] * n,
            },
        ],
        "parameters": {"cloud": cloud},
    }


def metrics_text(state: NoopState, cost_usd_per_hour: float) -> bytes:
    """The gateway's replica and cost gauges, rendered by prometheus_client."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

    registry = CollectorRegistry()
    replicas = Gauge(
        "bertgw_replicas", "running replicas", ["cloud"], registry=registry
    )
    for cloud in state.clouds:
        replicas.labels(cloud=cloud).set(1)
    Gauge("bertgw_cost_usd_per_hour", "cost rate", registry=registry).set(
        cost_usd_per_hour
    )
    Counter("bertgw_noop_requests", "requests seen", registry=registry).inc(
        state.requests
    )
    return generate_latest(registry)


async def start_http(state: NoopState, port: int, cost_usd_per_hour: float) -> Any:
    from aiohttp import web

    async def infer(request: web.Request) -> web.Response:
        cloud, failing = state.next()
        if state.delay_s:
            await asyncio.sleep(state.delay_s)
        if failing:
            return web.json_response(
                {"error": "noop: injected overload"},
                status=503,
                headers={"Retry-After": "1"},
            )
        try:
            n = count_json_texts(json.loads(await request.read()))
        except (ValueError, KeyError, IndexError, TypeError):
            return web.json_response({"error": "noop: bad infer body"}, status=400)
        body = json.dumps(oip_answer(request.match_info["model"], n, cloud))
        return web.Response(
            text=body,
            content_type="application/json",
            headers={"x-bertgw-cloud": cloud},
        )

    async def classify(request: web.Request) -> web.Response:
        cloud, failing = state.next()
        if failing:
            return web.json_response({"error": "noop: injected overload"}, status=503)
        payload = json.loads(await request.read())
        results = [
            {"label": LABEL, "score": 1.0, "truncated": False} for _ in payload["texts"]
        ]
        answer = {"model": payload.get("model"), "cloud": cloud, "results": results}
        return web.json_response(answer, headers={"x-bertgw-cloud": cloud})

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=metrics_text(state, cost_usd_per_hour),
            headers={"content-type": "text/plain; version=0.0.4"},
        )

    async def ready(_: web.Request) -> web.Response:
        return web.Response(status=200)

    app = web.Application()
    app.add_routes(
        [
            web.post("/v2/models/{model}/infer", infer),
            web.post("/v1/classify", classify),
            web.get("/metrics", metrics),
            web.get("/v2/health/ready", ready),
            web.get("/v2/health/live", ready),
        ]
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, port)
    await site.start()
    bound = runner.addresses[0][1]
    return runner, bound


async def start_grpc(state: NoopState, port: int) -> Any:
    import grpc

    from protos import inference_pb2 as pb
    from protos import inference_pb2_grpc

    class Servicer(inference_pb2_grpc.GRPCInferenceServiceServicer):
        async def ServerLive(self, request: Any, context: Any) -> Any:
            return pb.ServerLiveResponse(live=True)

        async def ServerReady(self, request: Any, context: Any) -> Any:
            return pb.ServerReadyResponse(ready=True)

        async def ModelInfer(self, request: Any, context: Any) -> Any:
            cloud, failing = state.next()
            if state.delay_s:
                await asyncio.sleep(state.delay_s)
            if failing:
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE, "noop: injected overload"
                )
            if request.raw_input_contents:
                n = count_raw_texts(request.raw_input_contents[0])
            else:
                n = len(request.inputs[0].contents.bytes_contents)
            response = pb.ModelInferResponse(model_name=request.model_name)
            response.outputs.add(
                name="label", datatype="BYTES", shape=[n]
            ).contents.bytes_contents.extend([LABEL.encode()] * n)
            response.outputs.add(
                name="score", datatype="FP32", shape=[n]
            ).contents.fp32_contents.extend([1.0] * n)
            response.outputs.add(
                name="truncated", datatype="BOOL", shape=[n]
            ).contents.bool_contents.extend([False] * n)
            response.parameters["cloud"].string_param = cloud
            return response

    server = grpc.aio.server()
    inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(), server)
    bound = server.add_insecure_port(f"{HOST}:{port}")
    await server.start()
    return server, bound


async def serve(args: argparse.Namespace) -> None:
    state = NoopState(args.clouds.split(","), args.error_every, args.delay_ms / 1000)
    ports: dict[str, int] = {}
    http_runner = grpc_server = None
    if args.http_port is not None:
        http_runner, ports["http_port"] = await start_http(
            state, args.http_port, args.cost_usd_per_hour
        )
    if args.grpc_port is not None:
        grpc_server, ports["grpc_port"] = await start_grpc(state, args.grpc_port)
    print(json.dumps(ports), flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), timeout=args.max_lifetime_s)
    except TimeoutError:
        logger.warning(
            "event=noop_lifetime_over max_lifetime_s=%s", args.max_lifetime_s
        )
    if grpc_server is not None:
        await grpc_server.stop(grace=1.0)
    if http_runner is not None:
        await http_runner.cleanup()


class NoopServerProcess:
    """Runs the no-op servers in a child process; a context manager giving the ports.

    Args:
        args: extra command-line arguments, e.g. ["--clouds", "a,b"].
    """

    def __init__(
        self, *, http: bool = True, grpc: bool = True, args: list[str] | None = None
    ) -> None:
        self._argv = [sys.executable, "-m", "loadtest.noop_server", *(args or [])]
        if http:
            self._argv += ["--http-port", "0"]
        if grpc:
            self._argv += ["--grpc-port", "0"]
        self._process: subprocess.Popen[str] | None = None
        self.http_port: int | None = None
        self.grpc_port: int | None = None

    def __enter__(self) -> NoopServerProcess:
        repo_root = Path(__file__).resolve().parent.parent
        self._process = subprocess.Popen(
            self._argv, cwd=repo_root, stdout=subprocess.PIPE, text=True
        )
        assert self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], _STARTUP_TIMEOUT_S)
        line = self._process.stdout.readline() if ready else ""
        if not line:
            self.__exit__(None, None, None)
            raise RuntimeError("the no-op server did not start")
        ports = json.loads(line)
        self.http_port = ports.get("http_port")
        self.grpc_port = ports.get("grpc_port")
        return self

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    def __exit__(self, *_: object) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--http-port", type=int, default=None, help="0 picks a free port"
    )
    parser.add_argument(
        "--grpc-port", type=int, default=None, help="0 picks a free port"
    )
    parser.add_argument("--clouds", default="noop", help="comma-separated cloud names")
    parser.add_argument("--cost-usd-per-hour", type=float, default=0.0)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="answer after this")
    parser.add_argument(
        "--error-every",
        type=int,
        default=0,
        help="every N-th request gets 503/UNAVAILABLE",
    )
    parser.add_argument("--max-lifetime-s", type=float, default=900.0)
    args = parser.parse_args(argv)
    if args.http_port is None and args.grpc_port is None:
        parser.error("give --http-port and/or --grpc-port")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
