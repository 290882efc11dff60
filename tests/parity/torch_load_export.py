"""PyTorch side of the export test (tests/test_job.c): loads the weights
`kdengine export` wrote into the reference model with a strict
load_state_dict, scores an IDX set (normalised like the job's val data)
and prints {"top1": ..., "samples": ...}.

usage: torch_load_export.py WEIGHTS MODEL NUM_CLASSES IN_CHANS IMAGES LABELS MEAN STD
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_ref import read_safetensors  # noqa: E402
from torch_resnet import build  # noqa: E402


def read_idx(path):
    with open(path, "rb") as f:
        data = f.read()
    ndims = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndims).reshape(dims)


def main():
    weights, model_name, classes, chans, images, labels, mean, std = sys.argv[1:9]
    model = build(model_name, int(classes), int(chans))
    state, _ = read_safetensors(weights)
    model.load_state_dict(state, strict=True)
    model.eval()
    x = torch.from_numpy(read_idx(images).astype(np.float32)).unsqueeze(1) / 255.0
    x = (x - float(mean)) / float(std)
    y = torch.from_numpy(read_idx(labels).astype(np.int64))
    with torch.no_grad():
        top1 = (model.taps(x)["logits"].argmax(1) == y).sum().item()
    print(json.dumps({"top1": 100.0 * top1 / len(y), "samples": len(y)}))


if __name__ == "__main__":
    main()
