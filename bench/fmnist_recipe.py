"""The recipe of a kdengine job file, trained in plain PyTorch.

Reads the same job JSON that `kdengine run` reads and trains what it
describes: the first `subset` images of an IDX dataset, the job's
random_crop / hflip / normalize / to_tensor transforms, a ResNet from
tests/parity/torch_resnet.py (timm/mdistiller state_dict names, so a
kdengine teacher loads as is), the ce / kd / logit_stand losses with
their weights, torch.optim.SGD and the job's lr schedule with its
warm-up. By default the shuffle order, crops and flips come from torch's
generator; --data-stream kdengine makes the same draws as kdengine's
loader (its Philox stream, core/loader.h), so a run sees the batches a
kdengine run of the job sees. --student-weights starts from given weights
(`kdengine export JOB --out F` writes a run's initial ones).
tests/test_recipe_steps replays short kdengine runs with these functions
and that stream, so both are known to compute the same training step on
the same batches.

Prints progress per epoch to stderr and one JSON line to stdout at the end:
{"job", "seed", "epochs", "subset", "top1", "top5", "loss", "seconds",
"threads", "blas"}; seconds counts training and evaluation, not loading.

usage: /usr/bin/python3 bench/fmnist_recipe.py JOB.json [--seed S]
       [--threads N] [--epochs N] [--subset N] [--teacher-weights PATH]
       [--student-weights PATH] [--data-stream torch|kdengine] [--eval-teacher]
"""
import argparse
import gzip
import json
import math
import os
import re
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "parity"))
from torch_ref import read_safetensors  # noqa: E402
from torch_resnet import CIFAR_DEPTHS, TIMM, build  # noqa: E402

LIBBLAS = "/etc/alternatives/libblas.so.3-x86_64-linux-gnu"
ZSCORE_EPS = 1e-7  # plugins/losses/kd/logit_kd.c: std + eps


def fail(msg):
    sys.exit(f"fmnist_recipe: {msg}")


# ---------------------------------------------------------------- data

def read_idx(path):
    """An IDX file of u8 as a tensor of its dimensions."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, kind, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or kind != 0x08:
        fail(f"{path}: not an IDX file of u8 (magic {data[:4].hex()})")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = bytearray(data[4 + 4 * ndim:])
    if len(body) != math.prod(dims):
        fail(f"{path}: {len(body)} bytes of data for dimensions {dims}")
    return torch.frombuffer(body, dtype=torch.uint8).reshape(dims)


def load_split(split, path):
    ds = split["dataset"]
    if ds.get("name") != "idx":
        fail(f"{path}.dataset: only the idx dataset is implemented, got {ds.get('name')!r}")
    images, labels = read_idx(ds["images"]), read_idx(ds["labels"])
    if images.ndim == 3:
        images = images.unsqueeze(1)
    elif images.ndim == 4:
        images = images.permute(0, 3, 1, 2).contiguous()
    else:
        fail(f"{ds['images']}: images must be N x H x W or N x H x W x C")
    if labels.ndim != 1 or len(labels) != len(images):
        fail(f"{ds['labels']}: {tuple(labels.shape)} labels for {len(images)} images")
    subset = split.get("subset", 0)
    if subset:
        if subset > len(images):
            fail(f"{path}.subset: {subset} is more than the {len(images)} samples")
        images, labels = images[:subset], labels[:subset]
    return images, labels.long()


# The random draws of an epoch come from a stream: TorchStream (torch's
# generator: a randperm per epoch, crops and flips drawn per batch) or
# KdengineStream (the draws kdengine's loader makes, core/loader.h, so both
# engines see the same batches). batch() is called before a batch's
# transforms run.

class TorchStream:
    def __init__(self, seed):
        self.gen = torch.Generator().manual_seed(seed)

    def order(self, n, epoch):
        return torch.randperm(n, generator=self.gen)

    def batch(self, idx, epoch):
        self.n = len(idx)

    def crop(self, rows, cols):
        top = torch.randint(0, rows, (self.n,), generator=self.gen)
        left = torch.randint(0, cols, (self.n,), generator=self.gen)
        return top, left

    def flip(self, p):
        return torch.rand(self.n, generator=self.gen) < p


M32, M64 = 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF


def philox4x32(key, ctr):
    """Philox4x32-10 (Salmon et al., SC'11), as core/rng.c computes it."""
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & M32, (p0 >> 32) ^ c3 ^ k1, p0 & M32
        k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
    return c0, c1, c2, c3


def mix64(z):
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


class KdRng:
    """kd_rng: Philox keyed by the seed, its counter's high half by the
    stream (kd_rng_make(seed, hi, lo))."""

    def __init__(self, seed, hi, lo):
        k, st = mix64(seed), mix64(hi ^ mix64(lo))
        self.key = (k & M32, k >> 32)
        self.stream = (st & M32, st >> 32)
        self.counter = 0
        self.block = None

    def u32(self):
        index, self.counter = self.counter, self.counter + 1
        b = index >> 2
        if self.block is None or self.block[0] != b:
            self.block = (b, philox4x32(self.key, (b & M32, b >> 32) + self.stream))
        return self.block[1][index & 3]

    def uniform(self):
        hi, lo = self.u32() >> 5, self.u32() >> 6
        return (hi * 67108864 + lo) / 9007199254740992.0

    def below(self, n):
        if n <= 1:
            return 0
        limit = M64 - M64 % n
        while True:
            v = (self.u32() << 32) | self.u32()
            if v < limit:
                return v % n


SHUFFLE_STREAM, AUGMENT_STREAM = 0x53485546, 0x4155474D  # core/loader.h


class KdengineStream:
    def __init__(self, seed):
        self.seed = seed

    def order(self, n, epoch):
        rng, order = KdRng(self.seed, SHUFFLE_STREAM << 32 | epoch, 0), list(range(n))
        for i in range(n - 1, 0, -1):
            j = rng.below(i + 1)
            order[i], order[j] = order[j], order[i]
        return torch.tensor(order)

    def batch(self, idx, epoch):
        # one rng per sample, shared by its transforms in list order
        self.rngs = [KdRng(self.seed, AUGMENT_STREAM << 32 | epoch, int(i)) for i in idx]

    def crop(self, rows, cols):
        drawn = [(r.below(rows), r.below(cols)) for r in self.rngs]
        return torch.tensor([t for t, _ in drawn]), torch.tensor([c for _, c in drawn])

    def flip(self, p):
        return torch.tensor([r.uniform() < p for r in self.rngs])


STREAMS = {"torch": TorchStream, "kdengine": KdengineStream}


def random_crop(t, stream):
    size = t["size"]
    if isinstance(size, int):
        size = [size]
    oh, ow = (size[0], size[0]) if len(size) == 1 else size
    pad = t.get("padding", 0)

    def apply(x):
        n, _, h, w = x.shape
        x = F.pad(x, (pad, pad, pad, pad))
        top, left = stream.crop(h + 2 * pad - oh + 1, w + 2 * pad - ow + 1)
        rows = (top[:, None] + torch.arange(oh))[:, None, :, None]
        cols = (left[:, None] + torch.arange(ow))[:, None, None, :]
        samples = torch.arange(n)[:, None, None, None]
        channels = torch.arange(x.shape[1])[None, :, None, None]
        return x[samples, channels, rows, cols]
    return apply


def hflip(t, stream):
    p = t.get("p", 0.5)

    def apply(x):
        flip = stream.flip(p)
        return torch.where(flip[:, None, None, None], x.flip(-1), x)
    return apply


def to_float(x):
    return x.float().div(255) if x.dtype == torch.uint8 else x


def normalize(t, stream):
    mean = torch.tensor(t["mean"], dtype=torch.float32)[None, :, None, None]
    std = torch.tensor(t["std"], dtype=torch.float32)[None, :, None, None]
    return lambda x: to_float(x).sub(mean).div(std)


TRANSFORMS = {"random_crop": random_crop, "hflip": hflip, "normalize": normalize,
              "to_tensor": lambda t, stream: to_float}


def make_pipeline(split, path, stream):
    """run(images, idx, epoch): the split's transforms on a batch of the
    samples idx. Without a stream, only deterministic transforms."""
    steps = []
    for i, t in enumerate(split.get("transforms", [])):
        if t["name"] not in TRANSFORMS:
            fail(f"{path}.transforms[{i}]: {t['name']!r} is not implemented here")
        if stream is None and t["name"] in ("random_crop", "hflip"):
            fail(f"{path}.transforms[{i}]: {t['name']!r} is random; not implemented here")
        steps.append(TRANSFORMS[t["name"]](t, stream))

    def run(x, idx, epoch):
        if stream:
            stream.batch(idx, epoch)
        for step in steps:
            x = step(x)
        return to_float(x)
    return run


def batches(n, size, shuffle, drop_last, stream, epoch):
    order = stream.order(n, epoch) if shuffle else torch.arange(n)
    end = n - n % size if drop_last else n
    for begin in range(0, end, size):
        yield order[begin:begin + size]


# ---------------------------------------------------------------- models

def make_model(spec, path):
    name = spec["model"]
    if name not in CIFAR_DEPTHS and name not in TIMM:
        fail(f"{path}.model: {name!r} is not a ResNet of tests/parity/torch_resnet.py")
    model = build(name, spec.get("num_classes", 100), spec.get("in_chans", 3))
    # kdengine's resnet init: kaiming normal (fan_out) convs, BN gamma 1 and
    # beta 0 (0 gamma on the last BN of a timm block), nn.Linear's default fc
    for mname, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d) and name in TIMM and mname.startswith("layer") and \
                mname.endswith(".bn3" if name == "resnet50" else ".bn2"):
            nn.init.zeros_(m.weight)
    return model


def load_weights(model, path, what):
    tensors, meta = read_safetensors(path)
    # a kdengine checkpoint keeps the student under "student."
    if "kdengine.state" in meta:
        tensors = {k[len("student."):]: v for k, v in tensors.items() if k.startswith("student.")}
    state = model.state_dict()
    missing = [k for k in state if k not in tensors and not k.endswith("num_batches_tracked")]
    if missing:
        fail(f"{what} weights {path}: missing {', '.join(missing[:5])}"
             f"{' ...' if len(missing) > 5 else ''}")
    for k, v in state.items():
        if k in tensors:
            if tuple(tensors[k].shape) != tuple(v.shape):
                fail(f"{what} weights {path}: {k} is {tuple(tensors[k].shape)}, "
                     f"the model wants {tuple(v.shape)}")
            v.copy_(tensors[k].to(v.dtype))


def logits_of(model, x):
    return model.taps(x)["logits"]


# ---------------------------------------------------------------- losses

def zscore(x):
    return (x - x.mean(1, keepdim=True)) / (x.std(1, unbiased=True, keepdim=True) + ZSCORE_EPS)


def kd_term(temperature, standardize):
    def loss(student, teacher, labels):
        s, t = (zscore(student), zscore(teacher)) if standardize else (student, teacher)
        kl = F.kl_div(F.log_softmax(s / temperature, 1), F.log_softmax(t / temperature, 1),
                      reduction="batchmean", log_target=True)
        return kl * temperature ** 2
    return loss


def make_loss(spec, path):
    name = spec["name"]
    for tap in ("tap", "student_tap", "teacher_tap"):
        if spec.get(tap, "logits") != "logits":
            fail(f"{path}.{tap}: only 'logits' is implemented here")
    if name == "ce":
        smoothing = spec.get("label_smoothing", 0.0)
        return lambda s, t, y: F.cross_entropy(s, y, label_smoothing=smoothing)
    if name == "kd":
        return kd_term(spec.get("temperature", 4.0), spec.get("logit_stand", False))
    if name == "logit_stand":
        return kd_term(spec.get("base_temperature", 2.0), True)
    fail(f"{path}.name: loss {name!r} is not implemented here")


# ---------------------------------------------------------------- optimizer

def make_optimizer(model, spec):
    if spec["name"] != "sgd":
        fail(f"optim.name: only sgd is implemented here, got {spec['name']!r}")
    wd = spec.get("weight_decay", 5e-4)
    params = list(model.parameters())
    if spec.get("no_decay", True):
        groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": wd},
                  {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    else:
        groups = [{"params": params, "weight_decay": wd}]
    return torch.optim.SGD(groups, lr=spec["lr"], momentum=spec.get("momentum", 0.9),
                           dampening=spec.get("dampening", 0.0),
                           nesterov=spec.get("nesterov", False))


def lr_at(spec, base_lr, epochs, steps_per_epoch, step):
    """The learning rate of optimizer step `step` (from 0), in closed form as
    plugins/optim/schedulers computes it: the schedule's epoch position is
    fractional with per_step, whole epochs otherwise; a linear warm-up from
    warmup_start_factor * lr replaces the first warmup_epochs."""
    per_step = spec.get("per_step", False)
    t = step / steps_per_epoch if per_step else step // steps_per_epoch
    warmup = spec.get("warmup_epochs", 0)
    if t < warmup:
        start = spec.get("warmup_start_factor", 0.1) * base_lr
        return start + t * (base_lr - start) / warmup
    name = spec["name"]
    if name == "constant":
        return base_lr
    if name == "step":
        return base_lr * spec.get("gamma", 0.1) ** math.floor(t / spec["step_size"])
    if name == "multistep":
        passed = sum(1 for m in spec["milestones"] if m <= t)
        return base_lr * spec.get("gamma", 0.1) ** passed
    if name == "cosine":
        eta_min = spec.get("eta_min", 0.0)
        if t >= epochs:
            return eta_min
        return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * t / epochs)) / 2
    fail(f"schedule.name: {name!r} is not implemented here")


def make_losses(job, teacher):
    """(loss function, weight, weight_warmup_epochs) per entry of job.losses."""
    losses = []
    for i, spec in enumerate(job["losses"]):
        fn = make_loss(spec, f"losses[{i}]")
        if spec["name"] != "ce" and teacher is None:
            fail(f"losses[{i}]: {spec['name']} needs a teacher")
        losses.append((fn, spec.get("weight", 1.0), spec.get("weight_warmup_epochs", 0.0)))
    return losses


def train_step(student, teacher, losses, opt, lr, x, y, pos):
    """One SGD step at lr on the batch (x, y); returns its weighted loss terms."""
    for group in opt.param_groups:
        group["lr"] = lr
    terms = loss_terms(student, teacher, losses, x, y, pos)
    opt.zero_grad(set_to_none=True)
    sum(terms).backward()
    opt.step()
    return terms


def loss_terms(student, teacher, losses, x, y, pos):
    """The weighted loss terms of one training step at epoch position pos,
    the teacher under no_grad as kdengine runs it."""
    t_logits = None
    if teacher is not None:
        with torch.no_grad():
            t_logits = logits_of(teacher, x)
    s_logits = logits_of(student, x)
    terms = []
    for fn, w, warm in losses:
        if warm > 0 and pos < warm:
            w *= pos / warm
        terms.append(w * fn(s_logits, t_logits, y))
    return terms


# ---------------------------------------------------------------- run

@torch.no_grad()
def evaluate(model, images, labels, split):
    """top-1, top-5 (a sample counts when fewer than k classes score strictly
    above its label, as kdengine counts) and the mean cross-entropy."""
    model.eval()
    pipeline = make_pipeline(split, "data.val", None)
    top1 = top5 = 0
    loss = 0.0
    for idx in batches(len(images), split.get("batch_size", 128), False, False, None, 0):
        z = logits_of(model, pipeline(images[idx], idx, 0))
        y = labels[idx]
        above = (z > z.gather(1, y[:, None])).sum(1)
        top1 += int((above == 0).sum())
        top5 += int((above < 5).sum())
        loss += float(F.cross_entropy(z, y, reduction="sum"))
    n = len(images)
    return 100.0 * top1 / n, 100.0 * top5 / n, loss / n


def blas_name():
    found = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    info = found.group(1) if found else "unknown"
    if info == "generic" and os.path.lexists(LIBBLAS):
        return f"generic libblas.so.3 -> {os.path.realpath(LIBBLAS)}"
    return info


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("job")
    ap.add_argument("--seed", type=int, help="overrides the job's seed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, help="overrides schedule.epochs")
    ap.add_argument("--subset", type=int, help="overrides data.train.subset")
    ap.add_argument("--teacher-weights", help="overrides teacher.weights")
    ap.add_argument("--student-weights",
                    help="starts the student from these weights (student.weights)")
    ap.add_argument("--data-stream", choices=sorted(STREAMS), default="torch",
                    help="where the shuffle order, crops and flips come from: torch's "
                         "generator (default) or kdengine's loader, draw for draw")
    ap.add_argument("--eval-teacher", action="store_true",
                    help="only evaluate the teacher on the val split")
    a = ap.parse_args()

    with open(a.job) as f:
        job = json.load(f)
    seed = job.get("seed", 0) if a.seed is None else a.seed
    epochs = job["schedule"]["epochs"] if a.epochs is None else a.epochs
    train_split, val_split = job["data"]["train"], job["data"].get("val")
    if a.subset is not None:
        train_split["subset"] = a.subset
    if a.teacher_weights:
        if "teacher" not in job:
            fail(f"--teacher-weights: {a.job} has no teacher")
        job["teacher"]["weights"] = a.teacher_weights
    if a.student_weights:
        job["student"]["weights"] = a.student_weights
    torch.set_num_threads(a.threads)
    torch.manual_seed(seed)
    stream = STREAMS[a.data_stream](seed)

    teacher = None
    if "teacher" in job:
        teacher = make_model(job["teacher"], "teacher")
        load_weights(teacher, job["teacher"]["weights"], "teacher")
        teacher.train(job["teacher"].get("train_bn", False))
    val = load_split(val_split, "data.val") if val_split else None
    if a.eval_teacher:
        if teacher is None or val is None:
            fail("--eval-teacher needs a job with a teacher and data.val")
        t0 = time.time()
        top1, top5, loss = evaluate(teacher, *val, val_split)
        print(json.dumps({"job": a.job, "model": "teacher", "top1": top1, "top5": top5,
                          "loss": loss, "seconds": round(time.time() - t0, 1), "threads": a.threads,
                          "blas": blas_name()}))
        return

    student = make_model(job["student"], "student")
    if job["student"].get("weights"):
        load_weights(student, job["student"]["weights"], "student")
    losses = make_losses(job, teacher)
    images, labels = load_split(train_split, "data.train")
    batch = train_split.get("batch_size", 128)
    shuffle, drop_last = train_split.get("shuffle", True), train_split.get("drop_last", True)
    steps_per_epoch = len(images) // batch if drop_last else -(-len(images) // batch)
    if steps_per_epoch == 0:
        fail(f"data.train: {len(images)} samples make no batch of {batch}")
    opt = make_optimizer(student, job["optim"])
    base_lr = job["optim"]["lr"]
    pipeline = make_pipeline(train_split, "data.train", stream)
    eval_every = job.get("eval", {}).get("every_epochs", 1)

    t0 = time.time()
    result = None
    step = 0
    for epoch in range(epochs):
        student.train()
        te = time.time()
        first_lr = None
        total = 0.0
        for k, idx in enumerate(batches(len(images), batch, shuffle, drop_last, stream, epoch)):
            lr = lr_at(job["schedule"], base_lr, epochs, steps_per_epoch, step)
            first_lr = lr if first_lr is None else first_lr
            x, y = pipeline(images[idx], idx, epoch), labels[idx]
            terms = train_step(student, teacher, losses, opt, lr, x, y,
                               epoch + k / steps_per_epoch)
            step += 1
            total += float(sum(terms))
        msg = (f"epoch {epoch + 1}/{epochs}: loss {total / steps_per_epoch:.4f} lr {first_lr:.5g} "
               f"{steps_per_epoch * batch / (time.time() - te):.0f} img/s")
        done = epoch + 1
        if val is not None and eval_every > 0 and (done % eval_every == 0 or done == epochs):
            result = evaluate(student, *val, val_split)
            msg += f"; eval top-1 {result[0]:.2f}% top-5 {result[1]:.2f}% loss {result[2]:.4f}"
        print(msg, file=sys.stderr, flush=True)
    seconds = time.time() - t0
    top1, top5, loss = result if result else (None, None, None)
    print(json.dumps({"job": a.job, "seed": seed, "epochs": epochs,
                      "subset": train_split.get("subset", 0), "data_stream": a.data_stream,
                      "top1": top1, "top5": top5,
                      "loss": loss, "seconds": round(seconds, 1), "threads": a.threads,
                      "blas": blas_name()}))


if __name__ == "__main__":
    main()
