"""PyTorch side of the clipping rows of tests/test_grad_steps.c.

The input holds, per case I: caseI.options metadata (JSON: "mode" "norm" or
"value", "limit"), and caseI.gK, the gradient of parameter K (a parameter
without a gradient has none). The output holds caseI.gK after
torch.nn.utils.clip_grad_norm_ / clip_grad_value_ in the inputs' dtype,
and caseI.norm, the total norm clip_grad_norm_ returns (norm mode).

usage: torch_grad_clip.py IN.safetensors OUT.safetensors
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_ref import read_safetensors, write_safetensors  # noqa: E402


def main():
    torch.set_num_threads(1)
    tensors, meta = read_safetensors(sys.argv[1])
    out, out_meta = {}, {}
    for i in range(int(meta.get("cases", "0"))):
        key = f"case{i}"
        try:
            o = json.loads(meta[f"{key}.options"])
            params = []
            for k in range(o["params"]):
                g = tensors.get(f"{key}.g{k}")
                p = torch.zeros(1 if g is None else g.shape,
                                dtype=torch.float64 if g is None else g.dtype,
                                requires_grad=True)
                p.grad = None if g is None else g.clone()
                params.append(p)
            if o["mode"] == "norm":
                norm = torch.nn.utils.clip_grad_norm_(params, o["limit"])
                out[f"{key}.norm"] = norm.detach().reshape(1).to(torch.float64)
            else:
                torch.nn.utils.clip_grad_value_(params, o["limit"])
            for k, p in enumerate(params):
                if p.grad is not None:
                    out[f"{key}.g{k}"] = p.grad
        except Exception as e:  # reported per case by the C side
            out_meta[f"{key}.error"] = f"{type(e).__name__}: {e}"
    write_safetensors(sys.argv[2], out, out_meta)


if __name__ == "__main__":
    main()
