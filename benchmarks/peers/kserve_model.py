"""The KServe peer: a fine-tuned BERT classifier behind KServe's Python model server.

Written the way a KServe user would: one `kserve.Model` subclass that tokenizes and
runs the whole request as one batch (KServe's server has no request batching of its
own), answering the Open Inference Protocol v2 over REST and gRPC. It runs in its own
virtual environment (`kserve`, `torch`, `transformers`), never in the project's.
"""

from __future__ import annotations

import argparse
import uuid

import numpy as np
import torch
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from transformers import AutoModelForSequenceClassification, AutoTokenizer


class BertClassifier(Model):
    """Top label and its probability for each text of an OIP v2 BYTES input."""

    def __init__(self, name: str, checkpoint_dir: str, num_threads: int) -> None:
        super().__init__(name)
        self.checkpoint_dir = checkpoint_dir
        self.num_threads = num_threads
        self.load()

    def load(self) -> bool:
        torch.set_num_threads(self.num_threads)
        self.tokenizer = AutoTokenizer.from_pretrained(self.checkpoint_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            self.checkpoint_dir, dtype=torch.float32
        ).eval()
        self.labels = [
            self.model.config.id2label[i] for i in range(self.model.config.num_labels)
        ]
        self.ready = True
        return self.ready

    def predict(
        self, payload: InferRequest, headers: dict[str, str] | None = None
    ) -> InferResponse:
        texts = [
            item.decode() if isinstance(item, bytes) else str(item)
            for item in payload.inputs[0].as_numpy().reshape(-1).tolist()
        ]
        encoded = self.tokenizer(
            texts, padding=True, truncation=True, return_tensors="pt"
        )
        with torch.inference_mode():
            probs = self.model(**encoded).logits.float().softmax(-1)
        scores, best = probs.max(-1)
        labels = np.array([self.labels[i] for i in best.tolist()], dtype=object)
        label_out = InferOutput(name="label", shape=[len(texts)], datatype="BYTES")
        label_out.set_data_from_numpy(labels, binary_data=False)
        score_out = InferOutput(name="score", shape=[len(texts)], datatype="FP32")
        score_out.set_data_from_numpy(scores.numpy(), binary_data=False)
        # KServe 0.21 answers 500 when a response carries no id.
        return InferResponse(
            response_id=payload.id or str(uuid.uuid4()),
            model_name=self.name,
            infer_outputs=[label_out, score_out],
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    args = parser.parse_args()
    model = BertClassifier(args.model_name, args.checkpoint, args.threads)
    ModelServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=1,
        enable_latency_logging=False,
    ).start([model])


if __name__ == "__main__":
    main()
