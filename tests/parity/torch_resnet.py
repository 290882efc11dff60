"""PyTorch side of the ResNet model test (tests/test_resnet.c).

Plain-torch reference modules with the state_dict names of mdistiller's
CIFAR ResNets and timm's ImageNet ResNets. One process serves the whole
test and writes into OUT_DIR:

  keys.json: {provider: [[name, shape, dtype], ...]} for every provider at
    its default parameters, in state_dict order.
  case<I>.safetensors for each CASE argument "provider,num_classes,
    in_chans,batch,size": the model's f32 weights (w.<name>, with random BN
    affine and running statistics), the f32 input, and computed from them
    in f64 and stored as f32: the eval-mode taps (eval.<tap>), the
    train-mode taps (train.<tap>), the gradients of every parameter
    (grad.<name>) and of the input (grad.input) for the upstream gradient
    `upstream` on the logits, and the buffers after the train forward
    (after.<name>). For the pre-ReLU taps: the same weights with each
    block's last BN shifts drawn around 0 (fz.<name>, the biases that
    change), so the residual sums cross 0, and that model's eval taps in
    f64, stored as f64 (frozen.<tap>).

Taps: "stem", per stage "stageN.preact" (the last block's residual sum,
before its final ReLU) and "stageN", "pre_logits", "logits".

usage: torch_resnet.py OUT_DIR CASE...
"""
import copy
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_ref import write_safetensors  # noqa: E402


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride, device):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False, device=device)
        self.bn1 = nn.BatchNorm2d(planes, device=device)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False, device=device)
        self.bn2 = nn.BatchNorm2d(planes, device=device)
        self.downsample = shortcut(cin, planes, stride, device)

    def preact(self, x, relu=F.relu):
        y = relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return y + (x if self.downsample is None else self.downsample(x))

    def forward(self, x, relu=F.relu):
        return relu(self.preact(x, relu))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride, device):
        super().__init__()
        cout = planes * 4
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False, device=device)
        self.bn1 = nn.BatchNorm2d(planes, device=device)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False, device=device)
        self.bn2 = nn.BatchNorm2d(planes, device=device)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False, device=device)
        self.bn3 = nn.BatchNorm2d(cout, device=device)
        self.downsample = shortcut(cin, cout, stride, device)

    def preact(self, x, relu=F.relu):
        y = relu(self.bn1(self.conv1(x)))
        y = relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return y + (x if self.downsample is None else self.downsample(x))

    def forward(self, x, relu=F.relu):
        return relu(self.preact(x, relu))


def shortcut(cin, cout, stride, device):
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False, device=device),
                         nn.BatchNorm2d(cout, device=device))


class ResNet(nn.Module):
    def __init__(self, block, depths, stem_width, planes, imagenet, num_classes, in_chans,
                 device):
        super().__init__()
        self.imagenet = imagenet
        k, s = (7, 2) if imagenet else (3, 1)
        self.conv1 = nn.Conv2d(in_chans, stem_width, k, s, k // 2, bias=False, device=device)
        self.bn1 = nn.BatchNorm2d(stem_width, device=device)
        cin = stem_width
        self.stages = len(depths)
        for i, (depth, p) in enumerate(zip(depths, planes)):
            blocks = []
            for j in range(depth):
                blocks.append(block(cin, p, 2 if i > 0 and j == 0 else 1, device))
                cin = p * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(cin, num_classes, device=device)

    def taps(self, x, relu=F.relu, max_pool=lambda t: F.max_pool2d(t, 3, 2, 1)):
        out = {}
        x = relu(self.bn1(self.conv1(x)))
        if self.imagenet:
            x = max_pool(x)
        out["stem"] = x
        for i in range(self.stages):
            layer = getattr(self, f"layer{i + 1}")
            for block in layer[:-1]:
                x = block(x, relu)
            x = layer[-1].preact(x, relu)
            out[f"stage{i + 1}.preact"] = x
            x = relu(x)
            out[f"stage{i + 1}"] = x
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        out["pre_logits"] = x
        out["logits"] = self.fc(x)
        return out


CIFAR_DEPTHS = {"resnet8": 1, "resnet14": 2, "resnet20": 3, "resnet32": 5, "resnet44": 7,
                "resnet56": 9, "resnet110": 18, "resnet8x4": 1, "resnet32x4": 5}
TIMM = {"resnet18": (BasicBlock, [2, 2, 2, 2]), "resnet34": (BasicBlock, [3, 4, 6, 3]),
        "resnet50": (Bottleneck, [3, 4, 6, 3])}


def build(name, num_classes=None, in_chans=3, device=None):
    """device "meta" gives the shapes without initialising anything."""
    if name in TIMM:
        block, depths = TIMM[name]
        return ResNet(block, depths, 64, [64, 128, 256, 512], True, num_classes or 1000,
                      in_chans, device)
    n = CIFAR_DEPTHS[name]
    stem, planes = (32, [64, 128, 256]) if name.endswith("x4") else (16, [16, 32, 64])
    return ResNet(BasicBlock, [n] * 3, stem, planes, False, num_classes or 100, in_chans,
                  device)


def parent(model, name):
    return model.get_submodule(name.rsplit(".", 1)[0])


def last_bn(model, name):
    """A block's last BN on either branch: what the residual sum adds."""
    return name.startswith("layer") and (
        name.endswith(".downsample.1") or name.endswith(".bn3") or
        (name.endswith(".bn2") and not hasattr(parent(model, name), "bn3")))


def randomize_bn(model, gen):
    """BN affine and running statistics away from their defaults, so a port
    that ignores any of them fails, set so that the train-mode forward is
    well conditioned and its ReLU inputs sit far from the kink (see
    kinks_clear). A BN that feeds a ReLU gets a shift of 4 gammas with a
    random sign per channel, so a channel is alive or dead almost
    everywhere; the last BN of a block and of its shortcut get a small
    gamma (timm zero-initialises it) and a positive shift of 4 gammas, so
    the residual sums stay positive and the deep maps do not grow a large
    common offset that batch statistics would cancel badly in f32."""
    for name, m in model.named_modules():
        if not isinstance(m, nn.BatchNorm2d):
            continue
        c = m.num_features
        if last_bn(model, name):
            gamma = torch.rand(c, generator=gen) * 0.2 + 0.1
            beta = 4 * gamma
        else:
            gamma = torch.rand(c, generator=gen) + 0.5
            beta = 4 * gamma * (2 * torch.randint(0, 2, (c,), generator=gen) - 1)
        with torch.no_grad():
            m.weight.copy_(gamma)
            m.bias.copy_(beta)
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            m.num_batches_tracked.fill_(7)


# Where f32 rounding could move a ReLU input across 0 or swap the top two of
# a max-pool window, the f32 gradient follows the other branch and differs
# from the exact one by a whole element's upstream gradient: a ~1% change in
# every earlier gradient. The C port's f32 error stays below 1e-5 of a map's
# RMS, so inputs with a value that close to a kink are skipped.
KINK_MARGIN = 1e-5


def kinks_clear(model, x):
    """Runs the train-mode forward, recording ReLU and max-pool inputs;
    true when none is within KINK_MARGIN of a kink."""
    seen = []

    def relu(t):
        seen.append(("relu", t.detach()))
        return F.relu(t)

    def max_pool(t):
        seen.append(("pool", t.detach()))
        return F.max_pool2d(t, 3, 2, 1)

    with torch.no_grad():
        copy.deepcopy(model).taps(x, relu, max_pool)  # keeps the running stats
    for kind, t in seen:
        rms = t.pow(2).mean().sqrt()
        if kind == "relu" and (t.abs() < KINK_MARGIN * rms).any():
            return False
        if kind == "pool":
            windows = F.unfold(F.pad(t, (1, 1, 1, 1), value=-float("inf")), 3, stride=2)
            top2 = windows.view(t.shape[0], t.shape[1], 9, -1).topk(2, dim=2).values
            gap = top2[:, :, 0] - top2[:, :, 1]
            if ((gap < KINK_MARGIN * rms) & (top2[:, :, 0] > 0)).any():
                return False
    return True


def run_case(spec, path):
    name, classes, chans, batch, size = spec.split(",")
    torch.manual_seed(1)
    gen = torch.Generator().manual_seed(2)
    model = build(name, int(classes), int(chans))
    randomize_bn(model, gen)
    out = {f"w.{k}": v.clone() for k, v in model.state_dict().items()}
    # The reference runs in f64 on the f32 weights and input: the exact
    # answer the C port's f32 is measured against.
    model.double().train()
    for attempt in range(20):
        x = torch.randn(int(batch), int(chans), int(size), int(size), generator=gen)
        if kinks_clear(model, x.double()):
            break
    else:
        raise RuntimeError(f"{spec}: no input clear of ReLU/max-pool kinks in 20 draws")
    out["input"] = x
    model.eval()
    with torch.no_grad():
        for k, v in model.taps(x.double()).items():
            out[f"eval.{k}"] = v.float()
    model.train()
    xg = x.double().requires_grad_(True)
    taps = model.taps(xg)
    for k, v in taps.items():
        out[f"train.{k}"] = v.detach().float()
    upstream = torch.randn(taps["logits"].shape, generator=gen)
    out["upstream"] = upstream
    taps["logits"].backward(upstream.double())
    out["grad.input"] = xg.grad.float()
    for k, p in model.named_parameters():
        out[f"grad.{k}"] = p.grad.float()
    for k, b in model.named_buffers():
        out[f"after.{k}"] = b.float() if b.is_floating_point() else b.clone()
    preact_taps(spec, int(classes), int(chans), x, gen, out)
    write_safetensors(path, out, {"case": spec})


def preact_taps(spec, classes, chans, x, gen, out):
    """randomize_bn keeps the residual sums positive, where a pre-ReLU
    tap equals its ReLU: here the last BNs' shifts are drawn around 0, so
    about half of every sum is negative, and the eval taps are kept in f64
    for the frozen (BN-folded) f64 port to be held to."""
    model = build(spec.split(",")[0], classes, chans)
    model.load_state_dict({k[2:]: v for k, v in out.items() if k.startswith("w.")})
    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d) and last_bn(model, name):
            with torch.no_grad():
                m.bias.copy_(m.weight * torch.randn(m.num_features, generator=gen))
            out[f"fz.{name}.bias"] = m.bias.detach().clone()
    model.double().eval()
    with torch.no_grad():
        for k, v in model.taps(x.double()).items():
            out[f"frozen.{k}"] = v


def main():
    torch.set_num_threads(1)
    out_dir = sys.argv[1]
    keys = {}
    for name in list(CIFAR_DEPTHS) + list(TIMM):
        sd = build(name, device="meta").state_dict()
        keys[name] = [[k, list(v.shape), str(v.dtype).replace("torch.", "")]
                      for k, v in sd.items()]
    with open(os.path.join(out_dir, "keys.json"), "w") as f:
        json.dump(keys, f)
    for i, spec in enumerate(sys.argv[2:]):
        run_case(spec, os.path.join(out_dir, f"case{i}.safetensors"))


if __name__ == "__main__":
    main()
