"""Reference of SSLD's data selection for tests/test_ssld.c (kdengine select).

Reads the probabilities `kdengine select --scores` wrote (probs [N, C]
float64, the pool's paths in metadata kdengine.pool) and applies the rule
PaddleClas describes, written independently of the C code: each image
belongs to its most probable class (the lowest of equals, numpy's argmax);
for each class, in class order, the K images of it with the highest
probability of that class are kept, most probable first, ties to the image
earlier in the pool (a stable sort). Writes the list "path class" per line.

usage: ssld_select.py SCORES.safetensors K OUT.txt
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_ref import read_safetensors  # noqa: E402


def main():
    tensors, meta = read_safetensors(sys.argv[1])
    k = int(sys.argv[2])
    probs = tensors["probs"].numpy()
    paths = json.loads(meta["kdengine.pool"])
    assert probs.shape[0] == len(paths)
    owner = np.argmax(probs, axis=1)
    lines = []
    for c in range(probs.shape[1]):
        members = [i for i in range(len(paths)) if owner[i] == c]
        members.sort(key=lambda i: -probs[i, c])  # stable: pool order among equals
        lines += ["%s %d\n" % (paths[i], c) for i in members[:k]]
    with open(sys.argv[3], "w") as f:
        f.writelines(lines)


if __name__ == "__main__":
    main()
