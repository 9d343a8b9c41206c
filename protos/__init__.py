"""gRPC definitions. Importing a stub regenerates it first if it is stale."""

from protos.build import build as _build

_build()
