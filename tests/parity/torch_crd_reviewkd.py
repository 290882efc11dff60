"""PyTorch side of the CRD and ReviewKD parity test (tests/test_crd_reviewkd.c).

Both losses are written out here in float64 from their papers and the
authors' training code (RepDistiller's CRD, the ReviewKD authors' ABF and
HCL as mdistiller runs them):

  crd       heads: v = normalize(W f + b) on the flattened feature; scores
            against the OTHER side's memory bank at the dataset indices
            idx[b] = (positive: its own index, or in relax mode one of its
            class; K negatives of other classes); S = exp(score / T); Z =
            mean(S) * N fixed on the first step; NCE with c = K / N, eps
            1e-7; then each bank moves to normalize(m M[i] + (1 - m) v).
  reviewkd  ABF blocks from the deepest level to the shallowest, nearest
            resizes, training-mode batch norm, HCL at full size and pooled
            4, 2, 1, times min((epoch + first_epoch) / warmup, 1).

The C side writes the loss's own tensors as it made them (cI.init.*,
rI.init.*), the features, and for CRD the negatives the plugin's sampler
drew for each step; this side answers with the values, the gradients with
respect to the student features and every parameter, and the state after
the last step, or cI.error / rI.error metadata.

The job case (j.*, when metadata job_case is 1): ReviewKD as the example
job binds it. The C side gives its teacher's state_dict (j.teacher.*), the
batch (j.input) and the student's levels; this side runs that teacher
(tests/parity/torch_resnet.py's ResNet, eval mode, f64), takes the levels
the job's teacher_taps name (stageN.preact: the last block before its
final ReLU), answers them as j.tap.<tap>, and runs the loss on them.

usage: torch_crd_reviewkd.py IN.safetensors OUT.safetensors
"""
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_ref import read_safetensors, write_safetensors  # noqa: E402
from torch_resnet import build as build_resnet  # noqa: E402

CRD_DEFAULTS = {"feat_dim": 128, "nce_k": 16384, "nce_t": 0.07, "nce_momentum": 0.5,
                "mode": "exact"}
REVIEW_DEFAULTS = {"student_taps": ["stage1", "stage2", "stage3", "pre_logits"],
                   "teacher_taps": ["stage1.preact", "stage2.preact", "stage3.preact",
                                    "pre_logits"],
                   "mid_channels": 0, "warmup_epochs": 20.0, "first_epoch": 1}
NCE_EPS = 1e-7
BN_MOMENTUM = 0.1
BN_EPS = 1e-5
CRD_PARAMS = ["embed_s.weight", "embed_s.bias", "embed_t.weight", "embed_t.bias"]


# ------------------------------------------------------------------ CRD

def l2_normalize(x):
    return x / x.pow(2).sum(1, keepdim=True).pow(0.5)


def contrast_loss(p, n_data):
    """RepDistiller's ContrastLoss: eq. (18) of the paper, noise Pn = 1/N."""
    bsz, k = p.shape[0], p.shape[1] - 1
    noise = k / n_data
    p_pos = p[:, 0]
    log_d1 = torch.log(p_pos / (p_pos + noise + NCE_EPS))
    p_neg = p[:, 1:]
    log_d0 = torch.log(torch.full_like(p_neg, noise) / (p_neg + noise + NCE_EPS))
    return -(log_d1.sum(0) + log_d0.reshape(-1).sum(0)) / bsz


def run_crd(key, params, tensors, out):
    p = dict(CRD_DEFAULTS)
    p.update(params)
    T, m = p["nce_t"], p["nce_momentum"]
    w = {n: tensors[f"{key}.init.{n}"].clone() for n in CRD_PARAMS}
    mem_s = tensors[f"{key}.init.memory_s"].clone()
    mem_t = tensors[f"{key}.init.memory_t"].clone()
    n_data, d = mem_s.shape
    z_s = z_t = None
    step = 0
    while f"{key}.s{step}.fs" in tensors:
        fs = tensors[f"{key}.s{step}.fs"].clone().requires_grad_(True)
        ft = tensors[f"{key}.s{step}.ft"]
        y = tensors[f"{key}.s{step}.indices"]
        idx = tensors[f"{key}.s{step}.idx"]
        bsz, kk = idx.shape
        labels = tensors[f"{key}.labels"]
        if p["mode"] == "exact" and not torch.equal(idx[:, 0], y):
            raise ValueError("the positive is not the sample's own index")
        if not torch.equal(labels[idx[:, 0]], labels[y]):
            raise ValueError("a positive of another class")
        if (labels[idx[:, 1:]] == labels[y].unsqueeze(1)).any():
            raise ValueError("a negative of the sample's own class")
        heads = {n: t.clone().requires_grad_(True) for n, t in w.items()}
        v_s = l2_normalize(F.linear(fs.flatten(1), heads["embed_s.weight"], heads["embed_s.bias"]))
        v_t = l2_normalize(F.linear(ft.flatten(1), heads["embed_t.weight"], heads["embed_t.bias"]))
        # the student's embedding against the teacher's bank, and back
        w_t = torch.index_select(mem_t, 0, idx.reshape(-1)).reshape(bsz, kk, d)
        w_s = torch.index_select(mem_s, 0, idx.reshape(-1)).reshape(bsz, kk, d)
        out_s = torch.exp(torch.bmm(w_t, v_s.unsqueeze(2)).squeeze(2) / T)
        out_t = torch.exp(torch.bmm(w_s, v_t.unsqueeze(2)).squeeze(2) / T)
        if z_s is None:
            z_s = (out_s.mean() * n_data).item()
            z_t = (out_t.mean() * n_data).item()
        loss = contrast_loss(out_s / z_s, n_data) + contrast_loss(out_t / z_t, n_data)
        grads = torch.autograd.grad(loss, [fs] + [heads[n] for n in CRD_PARAMS])
        out[f"{key}.s{step}.value"] = loss.detach().reshape(1)
        out[f"{key}.s{step}.grad.fs"] = grads[0]
        for n, g in zip(CRD_PARAMS, grads[1:]):
            out[f"{key}.s{step}.grad.{n}"] = g
        with torch.no_grad():
            for mem, v in ((mem_s, v_s), (mem_t, v_t)):
                pos = torch.index_select(mem, 0, y) * m + v * (1 - m)
                mem.index_copy_(0, y, l2_normalize(pos))
        step += 1
    out[f"{key}.final.memory_s"] = mem_s
    out[f"{key}.final.memory_t"] = mem_t
    out[f"{key}.final.nce_z"] = torch.tensor([z_s, z_t], dtype=torch.float64)


# ------------------------------------------------------------- ReviewKD

def as_map(x):
    return x if x.dim() == 4 else x.reshape(x.shape[0], x.shape[1], 1, 1)


def batch_norm(x, block, name, state):
    rm = state[f"{block}.{name}.running_mean"]
    rv = state[f"{block}.{name}.running_var"]
    return F.batch_norm(x, rm, rv, state[f"{block}.{name}.weight"], state[f"{block}.{name}.bias"],
                        True, BN_MOMENTUM, BN_EPS)


def abf(x, residual, block, state, teacher_hw):
    """One attention-based fusion block: (output onto the teacher's level,
    the fused map handed to the next shallower block)."""
    n, _, h, w = x.shape
    x = batch_norm(F.conv2d(x, state[f"{block}.conv1.0.weight"]), block, "conv1.1", state)
    if residual is not None:
        residual = F.interpolate(residual, (h, w), mode="nearest")
        z = torch.sigmoid(F.conv2d(torch.cat([x, residual], 1), state[f"{block}.att_conv.0.weight"],
                                   state[f"{block}.att_conv.0.bias"]))
        x = x * z[:, 0].view(n, 1, h, w) + residual * z[:, 1].view(n, 1, h, w)
    if tuple(x.shape[-2:]) != teacher_hw:
        x = F.interpolate(x, teacher_hw, mode="nearest")
    y = batch_norm(F.conv2d(x, state[f"{block}.conv2.0.weight"], padding=1), block, "conv2.1",
                   state)
    return y, x


def hcl(fs, ft):
    n, c, h, w = fs.shape
    loss = F.mse_loss(fs, ft, reduction="mean")
    cnt, tot = 1.0, 1.0
    for size in (4, 2, 1):
        if size >= h:
            continue
        cnt /= 2.0
        loss = loss + F.mse_loss(F.adaptive_avg_pool2d(fs, (size, size)),
                                 F.adaptive_avg_pool2d(ft, (size, size)), reduction="mean") * cnt
        tot += cnt
    return loss / tot


def run_review(key, params, epoch, tensors, out):
    p = dict(REVIEW_DEFAULTS)
    p.update(params)
    levels = len(p["student_taps"])
    prefix = f"{key}.init."
    state = {n[len(prefix):]: t.clone() for n, t in tensors.items() if n.startswith(prefix)}
    trainable = [n for n in state if "running_" not in n]
    for n in trainable:
        state[n].requires_grad_(True)
    fs = [tensors[f"{key}.s{i}"].clone().requires_grad_(True) for i in range(levels)]
    ft = [as_map(tensors[f"{key}.t{i}"]) for i in range(levels)]
    # mid: min(512, the deepest student level's channels) unless given
    mid = p["mid_channels"] or min(512, fs[-1].shape[1])
    if state["abfs.0.conv1.0.weight"].shape[0] != mid:
        raise ValueError(f"the plugin's blocks have {state['abfs.0.conv1.0.weight'].shape[0]} "
                         f"mid channels, the rule gives {mid}")
    total, residual = 0.0, None
    for j in range(levels):
        i = levels - 1 - j
        y, residual = abf(as_map(fs[i]), residual, f"abfs.{j}", state, tuple(ft[i].shape[-2:]))
        total = total + hcl(y, ft[i])
    factor = 1.0
    if p["warmup_epochs"] > 0:
        factor = min((epoch + p["first_epoch"]) / p["warmup_epochs"], 1.0)
    loss = factor * total
    grads = torch.autograd.grad(loss, fs + [state[n] for n in trainable])
    out[f"{key}.value"] = loss.detach().reshape(1)
    for i in range(levels):
        out[f"{key}.grad.s{i}"] = grads[i]
    for n, g in zip(trainable, grads[levels:]):
        out[f"{key}.grad.{n}"] = g
    for n, t in state.items():
        if "running_" in n:
            out[f"{key}.final.{n}"] = t


def run_review_job(meta, tensors, out):
    """The teacher levels from the job's teacher, then the loss on them."""
    params = json.loads(meta["j.params"])
    teacher_params = json.loads(meta["j.teacher_params"])
    teacher = build_resnet(meta["j.teacher"], teacher_params["num_classes"],
                           teacher_params["in_chans"])
    prefix = "j.teacher."
    teacher.load_state_dict({n[len(prefix):]: t for n, t in tensors.items()
                             if n.startswith(prefix)})
    teacher.double().eval()
    with torch.no_grad():
        taps = teacher.taps(tensors["j.input"].double())
    for i, name in enumerate(params["teacher_taps"]):
        tensors[f"j.t{i}"] = taps[name]
        out[f"j.tap.{name}"] = taps[name]
    run_review("j", params, int(meta["j.epoch"]), tensors, out)


def main():
    torch.set_num_threads(1)
    tensors, meta = read_safetensors(sys.argv[1])
    out, out_meta = {}, {}
    for i in range(int(meta["crd_cases"])):
        key = f"c{i}"
        try:
            run_crd(key, json.loads(meta[f"{key}.params"]), tensors, out)
        except Exception as e:  # reported per case by the C side
            out_meta[f"{key}.error"] = f"{type(e).__name__}: {e}"
    for i in range(int(meta["review_cases"])):
        key = f"r{i}"
        try:
            run_review(key, json.loads(meta[f"{key}.params"]), int(meta[f"{key}.epoch"]),
                       tensors, out)
        except Exception as e:
            out_meta[f"{key}.error"] = f"{type(e).__name__}: {e}"
    if meta.get("job_case") == "1":
        try:
            run_review_job(meta, tensors, out)
        except Exception as e:
            out_meta["j.error"] = f"{type(e).__name__}: {e}"
    write_safetensors(sys.argv[2], out, out_meta)


if __name__ == "__main__":
    main()
