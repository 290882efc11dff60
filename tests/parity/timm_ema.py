"""timm side of tests/test_ema.c: ModelEmaV3 (timm 0.9.16) step for step.

The input holds, per case I: caseI.options metadata (JSON: timm's
ModelEmaV3 arguments and "kinds", "p" for a parameter or "b" for a buffer
per tensor), caseI.tK (tensor K's initial value) and caseI.tK.S (its value
after optimizer step S, what the EMA then averages in, with step=S+1 as
timm's train.py passes). The output holds caseI.tK, the EMA's tensor K
after the last update.

usage: timm_ema.py IN.safetensors OUT.safetensors
"""
import json
import os
import sys

import torch
from timm.utils import ModelEmaV3

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_ref import read_safetensors, write_safetensors  # noqa: E402


class Holder(torch.nn.Module):
    def __init__(self, tensors, kinds):
        super().__init__()
        for k, (t, kind) in enumerate(zip(tensors, kinds)):
            if kind == "p":
                self.register_parameter(f"t{k}", torch.nn.Parameter(t.clone()))
            else:
                self.register_buffer(f"t{k}", t.clone())


def main():
    torch.set_num_threads(1)
    tensors, meta = read_safetensors(sys.argv[1])
    out, out_meta = {}, {}
    for i in range(int(meta.get("cases", "0"))):
        key = f"case{i}"
        try:
            o = json.loads(meta[f"{key}.options"])
            kinds = o.pop("kinds")
            steps = o.pop("steps")
            model = Holder([tensors[f"{key}.t{k}"] for k in range(len(kinds))], kinds)
            ema = ModelEmaV3(model, foreach=False, **o)
            for s in range(steps):
                with torch.no_grad():
                    for k in range(len(kinds)):
                        getattr(model, f"t{k}").copy_(tensors[f"{key}.t{k}.{s}"])
                ema.update(model, step=s + 1)
            for k in range(len(kinds)):
                out[f"{key}.t{k}"] = getattr(ema.module, f"t{k}").detach()
        except Exception as e:  # reported per case by the C side
            out_meta[f"{key}.error"] = f"{type(e).__name__}: {e}"
    write_safetensors(sys.argv[2], out, out_meta)


if __name__ == "__main__":
    main()
