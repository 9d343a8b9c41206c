"""The gateway: transports and wiring around the pure decision code in router/.

config.py     the deployment YAML as one frozen pydantic tree
protocol.py   Open Inference Protocol v2 parsing and encoding (pure)
auth.py       bearer tokens and per-token rate limits (pure)
dispatch.py   one request: admit, route, call a pool, retry once, report
pools.py      ReplicaPool, and ServePool over Serve deployment handles
emulation.py  emulated network, accelerator cap and faults per cloud
replica.py    the replica deployment: batched BERT classification
ingress.py    per-process state shared by the two transports
http_api.py   HTTP routes (FastAPI)          grpc_api.py  gRPC methods
metrics.py    Prometheus series              app.py       the Serve app
serve.py      `bertgw serve`                 client.py    `bertgw classify`
"""
