"""timm side of the augmentation test (tests/test_augment.c).

One process serves the whole test. It reads OUT_DIR/spec.json, written by
the C test, and writes OUT_DIR/augment.safetensors (metadata: none needed)
with, for every section of the spec:

  mixup_cases: each case a timm Mixup config, a batch shape and a seed.
    timm's Mixup runs on random images and labels; what it drew (the
    lambdas and cutmix flags of its _params_per_* call, the boxes of its
    cutmix_bbox_and_lam calls) is recorded next to its output, so the C
    side can drive its own pixel and target work with the same numbers:
      mix<i>.x, .labels, .out, .target, .lam (f64, per unit), .cut (I64,
      per unit), .box (I64 [calls, 4]: top, bottom, left, right).
  mixup_boxes: timm's rand_bbox for given (h, w, lam) with the centre it
    drew, recorded by replaying numpy's state: box.in (f64 [k, 5]: h, w,
    lam, cy, cx) and box.out (I64 [k, 4]).
  mixup_stats: per config, `draws` batch-level draws of timm's sampling
    (_params_per_batch then cutmix_bbox_and_lam): stat<i>.lam (the final
    lambda), stat<i>.cut (I64: 1 when cutmix ran) and stat<i>.side (I64:
    box height, 0 without a box).
  erasing_cases: timm's RandomErasing on a random normalized image
    (erase<i>.x, erase<i>.out), its Python `random` calls answered from
    the case's `words`: the 32-bit draws of the kd_rng the C transform
    gets, turned into numbers as kdengine does (KdStream below); the
    normal fill values come from the same stream.
  erasing_stats: per config, `draws` erasures of an all-ones image by
    timm's RandomErasing with Python's own generator: erase_stat<i>
    (f64: the erased fraction of each image).
  ra_ops: one timm AugmentOp (prob 1, a fixed magnitude) on an image:
    ra_op<i>.in / .out (U8 HWC), its draws (sign, interpolation) from the
    case's words.
  ra_cases: timm's rand_augment_transform(config, hparams) on an image,
    every draw from the case's words: ra<i>.in / .out.
  ra_stats: per config, `draws` images through timm's RandAugment with
    Python's and numpy's own generators and no pixel work, recording per
    chosen op: ra_stat<i>.op (I64: index in timm's op list), .applied
    (I64) and .magnitude (f64; -1 for ops without one).

usage: timm_augment.py OUT_DIR
"""
import json
import math
import os
import sys

import numpy as np
import torch
import timm.data.mixup as tm
import timm.data.random_erasing as tre
import timm.data.auto_augment as taa
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_ref import write_safetensors  # noqa: E402


class KdStream:
    """Python's random API answered from kdengine's rng (core/rng.c): the
    same 32-bit words made into the same numbers, so timm's code and the C
    transform make the same decisions."""

    def __init__(self, words):
        self.words, self.used = words, 0

    def u32(self):
        if self.used >= len(self.words):
            raise RuntimeError("KdStream: the C test wrote too few words")
        self.used += 1
        return self.words[self.used - 1]

    def random(self):  # kd_rng_uniform
        hi, lo = self.u32() >> 5, self.u32() >> 6
        return (hi * 67108864 + lo) * (1.0 / 9007199254740992.0)

    def below(self, n):  # kd_rng_below
        if n <= 1:
            return 0
        top = 2**64 - 1
        limit = top - top % n
        while True:
            v = (self.u32() << 32) | self.u32()
            if v < limit:
                return v % n

    def normal(self):  # kd_rng_normal
        u1 = 1.0 - self.random()
        u2 = self.random()
        return math.sqrt(-2.0 * math.log(u1)) * math.cos(6.283185307179586 * u2)

    def uniform(self, a, b):
        return a + (b - a) * self.random()

    def randint(self, a, b):
        return a + self.below(b - a + 1)

    def gauss(self, mu, sigma):
        return mu + sigma * self.normal()

    def choice(self, seq):
        return seq[self.below(len(seq))]


def mixup_of(cfg, classes):
    minmax = cfg["minmax"] if cfg["minmax"] else None
    return tm.Mixup(mixup_alpha=cfg["mixup_alpha"], cutmix_alpha=cfg["cutmix_alpha"],
                    cutmix_minmax=minmax, prob=cfg["prob"], switch_prob=cfg["switch_prob"],
                    mode=cfg["mode"], correct_lam=cfg["correct_lam"],
                    label_smoothing=cfg["smoothing"], num_classes=classes)


class Recorder:
    """Wraps a Mixup's draws and timm.data.mixup.cutmix_bbox_and_lam."""

    def __init__(self, mix):
        self.units = None
        self.boxes = []
        per_elem, per_batch = mix._params_per_elem, mix._params_per_batch

        def elem(n):
            lam, cut = per_elem(n)
            self.units = (np.array(lam, dtype=np.float64), np.array(cut, dtype=np.int64))
            return lam, cut

        def batch():
            lam, cut = per_batch()
            self.units = (np.array([lam], dtype=np.float64), np.array([cut], dtype=np.int64))
            return lam, cut

        mix._params_per_elem, mix._params_per_batch = elem, batch
        original = tm.cutmix_bbox_and_lam

        def bbox(*args, **kwargs):
            (yl, yh, xl, xh), lam = original(*args, **kwargs)
            self.boxes.append([int(yl), int(yh), int(xl), int(xh)])
            return (yl, yh, xl, xh), lam

        tm.cutmix_bbox_and_lam = bbox


def mixup_cases(spec, out):
    original = tm.cutmix_bbox_and_lam
    for i, case in enumerate(spec):
        np.random.seed(case["seed"])
        gen = torch.Generator().manual_seed(case["seed"])
        n, c, h, w = case["shape"]
        x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float32)
        labels = torch.randint(0, case["classes"], (n,), generator=gen, dtype=torch.int64)
        mix = mixup_of(case, case["classes"])
        rec = Recorder(mix)
        y, target = mix(x.clone(), labels)
        tm.cutmix_bbox_and_lam = original
        boxes = np.array(rec.boxes, dtype=np.int64).reshape(-1, 4)
        out.update({f"mix{i}.x": x, f"mix{i}.labels": labels, f"mix{i}.out": y,
                    f"mix{i}.target": target.to(torch.float32),
                    f"mix{i}.lam": torch.from_numpy(rec.units[0]),
                    f"mix{i}.cut": torch.from_numpy(rec.units[1]),
                    f"mix{i}.box": torch.from_numpy(boxes)})


def mixup_boxes(spec, out):
    rng = np.random.RandomState(spec["seed"])
    rows_in, rows_out = [], []
    np.random.seed(spec["seed"])
    for _ in range(spec["count"]):
        h, w = int(rng.randint(1, 300)), int(rng.randint(1, 300))
        lam = float(rng.rand())
        if rng.rand() < 0.5:  # elem and pair modes hand rand_bbox a float32
            lam = np.float32(lam)
        state = np.random.get_state()
        cy, cx = np.random.randint(0, h), np.random.randint(0, w)
        np.random.set_state(state)
        yl, yh, xl, xh = tm.rand_bbox((h, w), lam)
        rows_in.append([h, w, float(lam), cy, cx])
        rows_out.append([int(yl), int(yh), int(xl), int(xh)])
    out["box.in"] = torch.tensor(rows_in, dtype=torch.float64)
    out["box.out"] = torch.tensor(rows_out, dtype=torch.int64)


def mixup_stats(spec, out):
    for i, cfg in enumerate(spec):
        np.random.seed(cfg["seed"])
        mix = mixup_of(cfg, 10)
        h, w = cfg["image"]
        lams, cuts, sides = [], [], []
        for _ in range(cfg["draws"]):
            lam, cut = mix._params_per_batch()
            ran, side = bool(cut) and lam != 1., 0
            if ran:
                (yl, yh, xl, xh), lam = tm.cutmix_bbox_and_lam(
                    (h, w), lam, ratio_minmax=mix.cutmix_minmax, correct_lam=mix.correct_lam)
                side = int(yh - yl)
            lams.append(float(lam))
            cuts.append(int(ran))
            sides.append(side)
        out[f"stat{i}.lam"] = torch.tensor(lams, dtype=torch.float64)
        out[f"stat{i}.cut"] = torch.tensor(cuts, dtype=torch.int64)
        out[f"stat{i}.side"] = torch.tensor(sides, dtype=torch.int64)


def erasing_cases(spec, out):
    original_random, original_pixels = tre.random, tre._get_pixels
    for i, case in enumerate(spec):
        stream = KdStream(case["words"])

        def pixels(per_pixel, rand_color, patch_size, dtype=torch.float32, device="cpu"):
            if not per_pixel and not rand_color:
                return torch.zeros((patch_size[0], 1, 1), dtype=dtype)
            shape = patch_size if per_pixel else (patch_size[0], 1, 1)
            values = [stream.normal() for _ in range(math.prod(shape))]
            return torch.tensor(values, dtype=torch.float64).to(dtype).reshape(shape)

        tre.random, tre._get_pixels = stream, pixels
        gen = torch.Generator().manual_seed(case["seed"])
        x = torch.randn(*case["shape"], generator=gen, dtype=torch.float32)
        erase = tre.RandomErasing(case["probability"], min_area=case["min_area"],
                                  max_area=case["max_area"], min_aspect=case["min_aspect"],
                                  max_aspect=case["max_aspect"] or None, mode=case["mode"],
                                  min_count=case["min_count"],
                                  max_count=case["max_count"] or None, device="cpu")
        y = erase(x.clone())
        out[f"erase{i}.x"] = x
        out[f"erase{i}.out"] = y
    tre.random, tre._get_pixels = original_random, original_pixels


def erasing_stats(spec, out):
    state = tre.random.getstate()
    for i, cfg in enumerate(spec):
        tre.random.seed(cfg["seed"])
        erase = tre.RandomErasing(cfg["probability"], min_area=cfg["min_area"],
                                  max_area=cfg["max_area"], min_aspect=cfg["min_aspect"],
                                  mode="const", min_count=cfg["min_count"],
                                  max_count=cfg["max_count"] or None, device="cpu")
        shape = cfg["shape"]
        fractions = [float((erase(torch.ones(*shape)) == 0).double().mean())
                     for _ in range(cfg["draws"])]
        out[f"erase_stat{i}"] = torch.tensor(fractions, dtype=torch.float64)
    tre.random.setstate(state)


def test_image(seed, shape):
    """A smooth gradient with noise and a few flat patches (u8 HWC), so
    histograms have gaps and spikes."""
    h, w, c = shape
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 // max(w - 1, 1) + k * 40) % 256 * (1 - k % 2) +
                     (yy * 200 // max(h - 1, 1)) * (k % 2) for k in range(c)], -1)
    noise = rng.randint(-30, 31, size=(h, w, c))
    img = np.clip(base + noise, 0, 255).astype(np.uint8)
    img[h // 3:h // 2, w // 4:w // 2] = rng.randint(0, 256, size=c)
    return img


def pil_of(img):
    return Image.fromarray(img[:, :, 0], "L") if img.shape[2] == 1 else Image.fromarray(img, "RGB")


def array_of(pil, channels):
    out = np.asarray(pil, dtype=np.uint8)
    return out.reshape(out.shape[0], out.shape[1], channels)


INTERPOLATION = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def hparams_of(case):
    hp = {"translate_const": 250, "img_mean": tuple(case["img_mean"])}
    if case.get("translate_pct") is not None:
        hp["translate_pct"] = case["translate_pct"]
    if case["interpolation"] != "random":
        hp["interpolation"] = INTERPOLATION[case["interpolation"]]
    return hp


class NumpyShim:
    """timm's module-level `np` with random.choice answered from a stream."""

    def __init__(self, stream):
        self.random = self
        self.stream = stream

    def choice(self, ops, n, replace=True, p=None):
        if p is None:
            assert replace
            return [ops[self.stream.below(len(ops))] for _ in range(n)]
        # numpy's RandomState.choice without replacement, its rand() taken
        # from the stream
        assert not replace
        p = np.array(p, dtype=np.float64)
        found = []
        while len(found) < n:
            x = np.array([self.stream.random() for _ in range(n - len(found))])
            if found:
                p[found] = 0
            cdf = np.cumsum(p)
            cdf /= cdf[-1]
            new = cdf.searchsorted(x, side="right")
            _, first = np.unique(new, return_index=True)
            found += [int(k) for k in new[np.sort(first)]]
        return [ops[k] for k in found]


def ra_ops(spec, out):
    original = taa.random
    for i, case in enumerate(spec):
        taa.random = KdStream(case["words"])
        img = test_image(case["seed"], case["shape"])
        op = taa.AugmentOp(case["op"], prob=1.0, magnitude=case["magnitude"],
                           hparams=hparams_of(case))
        res = op(pil_of(img))
        out[f"ra_op{i}.in"] = torch.from_numpy(img)
        out[f"ra_op{i}.out"] = torch.from_numpy(array_of(res, img.shape[2]).copy())
    taa.random = original


def ra_cases(spec, out):
    original_random, original_np = taa.random, taa.np
    for i, case in enumerate(spec):
        stream = KdStream(case["words"])
        ra = taa.rand_augment_transform(case["config"], hparams_of(case))
        taa.random, taa.np = stream, NumpyShim(stream)
        img = test_image(case["seed"], case["shape"])
        res = ra(pil_of(img))
        taa.random, taa.np = original_random, original_np
        out[f"ra{i}.in"] = torch.from_numpy(img)
        out[f"ra{i}.out"] = torch.from_numpy(array_of(res, img.shape[2]).copy())


class RecordedOp:
    def __init__(self, op, index, log):
        self.op, self.index, self.log = op, index, log
        level_fn, aug_fn = op.level_fn, op.aug_fn

        def level(magnitude, hparams):
            self.log[-1][2] = float(magnitude)
            return level_fn(magnitude, hparams)

        def aug(img, *args, **kwargs):
            self.log[-1][1] = 1
            return img

        op.level_fn = level if level_fn is not None else None
        op.aug_fn = aug

    def __call__(self, img):
        self.log.append([self.index, 0, -1.0])
        return self.op(img)


def ra_stats(spec, out):
    for i, cfg in enumerate(spec):
        random_state = taa.random.getstate()
        taa.random.seed(cfg["seed"])
        np.random.seed(cfg["seed"])
        ra = taa.rand_augment_transform(cfg["config"], {"translate_const": 250,
                                                        "img_mean": (128, 128, 128)})
        log = []
        ra.ops = [RecordedOp(op, k, log) for k, op in enumerate(ra.ops)]
        for _ in range(cfg["draws"]):
            ra(None)
        taa.random.setstate(random_state)
        out[f"ra_stat{i}.op"] = torch.tensor([r[0] for r in log], dtype=torch.int64)
        out[f"ra_stat{i}.applied"] = torch.tensor([r[1] for r in log], dtype=torch.int64)
        out[f"ra_stat{i}.magnitude"] = torch.tensor([r[2] for r in log], dtype=torch.float64)


def main():
    out_dir = sys.argv[1]
    with open(os.path.join(out_dir, "spec.json")) as f:
        spec = json.load(f)
    out = {}
    mixup_cases(spec.get("mixup_cases", []), out)
    if "mixup_boxes" in spec:
        mixup_boxes(spec["mixup_boxes"], out)
    mixup_stats(spec.get("mixup_stats", []), out)
    erasing_cases(spec.get("erasing_cases", []), out)
    erasing_stats(spec.get("erasing_stats", []), out)
    ra_ops(spec.get("ra_ops", []), out)
    ra_cases(spec.get("ra_cases", []), out)
    ra_stats(spec.get("ra_stats", []), out)
    write_safetensors(os.path.join(out_dir, "augment.safetensors"), out, {})


if __name__ == "__main__":
    main()
