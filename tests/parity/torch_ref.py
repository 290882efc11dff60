"""PyTorch side of the op parity test (tests/test_ops.c).

Reads the cases kdengine wrote (inputs, upstream gradient, its own output and
the torch expression of each case) from one safetensors file, evaluates every
case in torch, and writes outputs and input gradients to another. One
process serves the whole table.

usage: torch_ref.py IN.safetensors OUT.safetensors
"""
import json
import struct
import sys

import torch
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64,
          "I32": torch.int32, "U8": torch.uint8, "F16": torch.float16,
          "BF16": torch.bfloat16}
NAMES = {v: k for k, v in DTYPES.items()}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        raw = bytearray(data[base + begin:base + end])
        t = torch.frombuffer(raw, dtype=DTYPES[info["dtype"]]) if raw else \
            torch.empty(0, dtype=DTYPES[info["dtype"]])
        tensors[name] = t.reshape(info["shape"]).clone()
    return tensors, meta


def write_safetensors(path, tensors, meta):
    header = {"__metadata__": meta}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        raw = t.numpy().tobytes() if t.dtype != torch.bfloat16 else \
            t.view(torch.int16).numpy().tobytes()
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def main():
    torch.set_num_threads(1)
    tensors, meta = read_safetensors(sys.argv[1])
    out, out_meta = {}, {}
    for i in range(int(meta["cases"])):
        expr = meta[f"c{i}.torch"]
        grads = [int(k) for k in meta[f"c{i}.grad"].split(",") if k]
        xs = []
        k = 0
        while f"c{i}.x{k}" in tensors:
            t = tensors[f"c{i}.x{k}"]
            if t.dtype == torch.uint8:
                t = t.bool()
            if k in grads:
                t = t.clone().requires_grad_(True)
            xs.append(t)
            k += 1
        env = {"x": xs, "F": F, "torch": torch, "ykd": tensors[f"c{i}.ykd"]}
        try:
            y = eval(expr, env)
            out[f"c{i}.y"] = y.detach()
            if grads:
                y.backward(tensors[f"c{i}.gy"])
                for g in grads:
                    gx = xs[g].grad
                    out[f"c{i}.gx{g}"] = gx if gx is not None else torch.zeros_like(xs[g])
        except Exception as e:  # reported per case by the C side
            out_meta[f"c{i}.error"] = f"{type(e).__name__}: {e} (in {expr})"
    write_safetensors(sys.argv[2], out, out_meta)


if __name__ == "__main__":
    main()
