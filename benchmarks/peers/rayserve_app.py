"""The plain Ray Serve peer: one deployment, `@serve.batch`, a FastAPI route.

Written the way a Ray Serve user would serve a fine-tuned classifier: texts from all
concurrent requests are gathered into batches by `@serve.batch`, one forward pass per
batch. It runs in its own virtual environment (`ray[serve]`, `torch`,
`transformers`), never in the project's.

    POST /classify {"texts": ["..."]} -> {"results": [{"label": "...", "score": 0.9}]}
"""

# No `from __future__ import annotations` here: FastAPI must see the body model's
# class, not a string, to read the JSON body.

import argparse
import asyncio
import signal

import ray
import torch
from fastapi import FastAPI
from pydantic import BaseModel
from ray import serve
from transformers import AutoModelForSequenceClassification, AutoTokenizer

MAX_BATCH_SIZE = 32
BATCH_WAIT_S = 0.005

app = FastAPI()


class ClassifyBody(BaseModel):
    texts: list[str]


# Access logs off: a log line per request costs CPU that the model needs.
@serve.deployment(
    num_replicas=1,
    max_ongoing_requests=256,
    logging_config={"enable_access_log": False},
)
@serve.ingress(app)
class Classifier:
    def __init__(self, checkpoint_dir: str, num_threads: int) -> None:
        torch.set_num_threads(num_threads)
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            checkpoint_dir, dtype=torch.float32
        ).eval()
        self.labels = [
            self.model.config.id2label[i] for i in range(self.model.config.num_labels)
        ]

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
    async def classify_batch(self, texts: list[str]) -> list[dict]:
        encoded = self.tokenizer(
            texts, padding=True, truncation=True, return_tensors="pt"
        )
        with torch.inference_mode():
            probs = self.model(**encoded).logits.float().softmax(-1)
        scores, best = probs.max(-1)
        return [
            {"label": self.labels[i], "score": s}
            for i, s in zip(best.tolist(), scores.tolist(), strict=True)
        ]

    @app.post("/classify")
    async def classify(self, body: ClassifyBody) -> dict:
        results = await asyncio.gather(*(self.classify_batch(t) for t in body.texts))
        return {"results": list(results)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    ray.init(num_cpus=args.threads, include_dashboard=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(
        Classifier.options(ray_actor_options={"num_cpus": 1}).bind(
            args.checkpoint, args.threads
        ),
        name="classifier",
        route_prefix="/",
    )

    stopped = asyncio.Event()
    loop = asyncio.new_event_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    loop.run_until_complete(stopped.wait())
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
