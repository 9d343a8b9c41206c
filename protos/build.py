"""Generates the Python gRPC stubs from protos/*.proto (run by scripts/bootstrap).

The stubs are build output: they are ignored by git and regenerated whenever a
.proto file is newer than its stub, so nobody edits them by hand.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

PROTO_DIR = Path(__file__).resolve().parent


def stale_protos() -> list[Path]:
    """The .proto files whose generated stubs are missing or older than the source."""
    stale = []
    for proto in sorted(PROTO_DIR.glob("*.proto")):
        for suffix in ("_pb2.py", "_pb2_grpc.py"):
            stub = proto.with_name(proto.stem + suffix)
            if not stub.exists() or stub.stat().st_mtime < proto.stat().st_mtime:
                stale.append(proto)
                break
    return stale


def build(force: bool = False) -> list[Path]:
    """Runs grpc_tools.protoc on every stale .proto file; returns those it built."""
    from grpc_tools import protoc  # imported here: a build-time tool

    protos = sorted(PROTO_DIR.glob("*.proto")) if force else stale_protos()
    include = Path(protoc.__file__).resolve().parent / "_proto"
    for proto in protos:
        # Build into the package root so generated imports read `protos.x_pb2`.
        args = [
            "protoc",
            f"-I{PROTO_DIR.parent}",
            f"-I{include}",
            f"--python_out={PROTO_DIR.parent}",
            f"--pyi_out={PROTO_DIR.parent}",
            f"--grpc_python_out={PROTO_DIR.parent}",
            str(proto.relative_to(PROTO_DIR.parent)),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {proto.name}")
        logger.info("event=proto_built file=%s", proto.name)
    return protos


if __name__ == "__main__":
    built = build(force="--force" in sys.argv)
    print(f"protos: built {len(built)} file(s)")
