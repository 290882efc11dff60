"""Fixtures and references for tests/test_images.c, in one process.

usage: pil_images.py OUT_DIR

Writes image folders built from Fashion-MNIST and scikit-image's
photographs (JPEG, PNG, gray, RGBA, palette, CMYK, 16-bit, EXIF-rotated),
CIFAR-10/100 binary files, and what PIL, torchvision 0.14 and numpy make
of them (raw u8 files), indexed by OUT_DIR/expect.json.
"""
import gzip
import io
import json
import math
import os
import struct
import sys
import zlib

import numpy as np
import torch
import torchvision
import torchvision.transforms.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode, RandomResizedCrop

out = sys.argv[1]
expect = {}
SKIMAGE = os.path.join(os.path.dirname(__import__("skimage").__file__), "data")
FMNIST = "/usr/share/datasets/fashion-mnist"


def raw(name, array):
    """A u8 array as a raw file; returns its name."""
    path = os.path.join(out, name)
    np.ascontiguousarray(array, dtype=np.uint8).tofile(path)
    return name


def write_png(path, arr, bitdepth):
    """PNG writer for what PIL cannot write (16-bit colour)."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    h, w, c = arr.shape
    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    dt = ">u2" if bitdepth == 16 else "u1"
    rows = b"".join(b"\x00" + arr[y].astype(dt).tobytes() for y in range(h))

    def chunk(kind, data):
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", w, h, bitdepth, ctype, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows))
                + chunk(b"IEND", b""))


# ---------------------------------------------------------------- decoding
photos = os.path.join(out, "photos")
os.makedirs(photos)
chelsea = Image.open(os.path.join(SKIMAGE, "chelsea.png")).convert("RGB")   # 451 x 300
coffee = Image.open(os.path.join(SKIMAGE, "coffee.png")).convert("RGB")     # 600 x 400
camera = Image.open(os.path.join(SKIMAGE, "camera.png"))                    # gray 512
made = []
chelsea.save(os.path.join(photos, "chelsea.jpg"), quality=90)
coffee.save(os.path.join(photos, "coffee.png"))
camera.save(os.path.join(photos, "camera_gray.jpg"), quality=85)
camera.save(os.path.join(photos, "camera_gray.png"))
rgba = chelsea.convert("RGBA")
rgba.putalpha(Image.linear_gradient("L").resize(chelsea.size))
rgba.save(os.path.join(photos, "chelsea_rgba.png"))
coffee.convert("CMYK").save(os.path.join(photos, "coffee_cmyk.jpg"), quality=92)
coffee.convert("P", palette=Image.ADAPTIVE, colors=64).save(os.path.join(photos, "coffee_palette.png"))
c16 = np.asarray(coffee).astype(np.uint16) * 257 + np.arange(600)[None, :, None].astype(np.uint16)
write_png(os.path.join(photos, "coffee16.png"), c16, 16)
g16 = (np.asarray(camera).astype(np.uint16) * 3)  # values up to 765: Pillow clips them
write_png(os.path.join(photos, "camera16.png"), g16, 16)
la16 = np.stack([np.asarray(camera).astype(np.uint16) * 256 + 77,
                 np.full((512, 512), 40000, np.uint16)], axis=2)
write_png(os.path.join(photos, "camera_la16.png"), la16, 16)
# EXIF orientation 6 (rotate 90): PIL's loader ignores it, so must we
exif = Image.Exif()
exif[0x0112] = 6
chelsea.save(os.path.join(photos, "chelsea_exif6.jpg"), quality=90, exif=exif.tobytes())

# CMYK: Pillow and OpenCV convert CMYK to RGB with different rounding
decode = []
for name in sorted(os.listdir(photos)):
    im = Image.open(os.path.join(photos, name))
    rgb = np.asarray(im.convert("RGB"))
    gray = np.asarray(im.convert("L"))
    decode.append({"file": "photos/" + name, "height": rgb.shape[0], "width": rgb.shape[1],
                   "rgb": raw(name + ".rgb", rgb), "gray": raw(name + ".gray", gray),
                   "mode": im.mode})
expect["decode"] = decode

# ------------------------------------------------- Fashion-MNIST folder
with gzip.open(os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz")) as f:
    fm_images = np.frombuffer(f.read()[16:], np.uint8).reshape(-1, 28, 28)
with gzip.open(os.path.join(FMNIST, "t10k-labels-idx1-ubyte.gz")) as f:
    fm_labels = np.frombuffer(f.read()[8:], np.uint8)
names = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
         "bag", "ankle-boot"]
root = os.path.join(out, "fmnist")
sizes = [28, 40, 56]
for i in range(60):
    label = int(fm_labels[i])
    folder = os.path.join(root, "%d-%s" % (label, names[label]))
    if i % 7 == 3:
        folder = os.path.join(folder, "nested" if i % 2 else "nested-b")
    os.makedirs(folder, exist_ok=True)
    im = Image.fromarray(fm_images[i])
    side = sizes[i % 3]
    if side != 28:
        im = im.resize((side, side + 4), Image.BILINEAR)
    if i % 4 == 1:
        im = im.convert("RGB")
    ext = [".png", ".jpg", ".JPEG", ".PNG"][i % 4]
    im.save(os.path.join(folder, "img%03d%s" % (i, ext)), format="PNG" if "png" in ext.lower() else "JPEG")
with open(os.path.join(root, "0-t-shirt", "notes.txt"), "w") as f:
    f.write("not an image\n")
folder_set = torchvision.datasets.ImageFolder(root)
samples = []
for k, (path, label) in enumerate(folder_set.samples):
    img = folder_set.loader(path)   # PIL, convert("RGB")
    arr = np.asarray(img)
    samples.append({"path": os.path.relpath(path, out), "label": label,
                    "height": arr.shape[0], "width": arr.shape[1],
                    "rgb": raw("fm%03d.rgb" % k, arr)})
expect["folder"] = {"root": "fmnist", "classes": folder_set.classes, "samples": samples}
with open(os.path.join(out, "list.txt"), "w") as f:
    for s in samples[::2]:
        f.write("%s %d\n" % (os.path.relpath(s["path"], "fmnist"), s["label"]))
    f.write("\n")

# ------------------------------------------------------------ geometry
src = np.asarray(chelsea)
expect["geometry_source"] = {"file": "photos/chelsea.jpg"}
chelsea_decoded = Image.open(os.path.join(photos, "chelsea.jpg")).convert("RGB")
tensor = torch.from_numpy(np.asarray(chelsea_decoded).copy()).permute(2, 0, 1)
resize = []
for size, mode in [(100, "bilinear"), (100, "bicubic"), (280, "bilinear"), (600, "bilinear"),
                   (600, "bicubic"), ([150, 420], "bilinear")]:
    interp = InterpolationMode.BILINEAR if mode == "bilinear" else InterpolationMode.BICUBIC
    pil = np.asarray(F.resize(chelsea_decoded, size, interp))
    ten = F.resize(tensor, size if isinstance(size, list) else [size], interp,
                   antialias=False).permute(1, 2, 0).numpy()
    tag = "%s_%s" % (str(size).replace(" ", ""), mode)
    resize.append({"size": size if isinstance(size, list) else [size], "interpolation": mode,
                   "height": pil.shape[0], "width": pil.shape[1],
                   "pil": raw("resize_%s.pil" % tag, pil), "tensor": raw("resize_%s.ten" % tag, ten)})
expect["resize"] = resize
crops = []
for size in [[224, 224], [299, 450], [300, 451], [301, 101], [320, 460], [7, 8]]:
    c = np.asarray(F.center_crop(chelsea_decoded, size))
    crops.append({"size": size, "out": raw("crop_%d_%d" % tuple(size), c)})
expect["center_crop"] = crops

# RandomResizedCrop: torchvision's own get_params under a seed, and the
# float32 draws it consumed (replayed from the same seed) for each try.
def recorded_draws(seed, scale, ratio, tries):
    torch.manual_seed(seed)
    log_ratio = torch.log(torch.tensor(ratio))
    draws = []
    for _ in range(tries):
        s = torch.empty(1).uniform_(scale[0], scale[1]).item()
        a = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
        draws.append([s, a])
    return draws

rrc = []
for height, width, scale, ratio in [(300, 451, (0.08, 1.0), (3 / 4, 4 / 3)),
                                    (28, 28, (0.08, 1.0), (3 / 4, 4 / 3)),
                                    (10, 400, (0.5, 1.0), (3 / 4, 4 / 3)),
                                    (400, 10, (0.5, 1.0), (3 / 4, 4 / 3)),
                                    (375, 500, (0.9, 1.0), (0.2, 5.0)),
                                    (33, 17, (0.3, 0.31), (1.0, 1.0))]:
    img = torch.zeros(1, height, width)
    for seed in range(150):
        torch.manual_seed(seed)
        window = RandomResizedCrop.get_params(img, list(scale), list(ratio))
        rrc.append({"height": height, "width": width, "scale": list(scale), "ratio": list(ratio),
                    "draws": recorded_draws(seed, scale, ratio, 10), "window": list(window)})
expect["rrc_exact"] = rrc

# the sampler's distribution: torchvision's own, 20000 windows of a 375x500 image
torch.manual_seed(1234)
img = torch.zeros(1, 375, 500)
wins = np.array([RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3])
                 for _ in range(20000)], dtype=np.float64)
area = wins[:, 2] * wins[:, 3] / (375 * 500)
aspect = np.log(wins[:, 3] / wins[:, 2])
cy = (wins[:, 0] + wins[:, 2] / 2) / 375
stats = {}
for name, v in [("area", area), ("log_aspect", aspect), ("centre_y", cy),
                ("height", wins[:, 2]), ("width", wins[:, 3])]:
    stats[name] = [float(v.mean()), float(v.std())]
stats["n"] = len(wins)
expect["rrc_stats"] = stats

# resized_crop of a window, tensor path without antialiasing (OpenCV's model)
pixels = []
for i, j, h, w, size in [(10, 20, 200, 300, [224, 224]), (0, 0, 300, 451, [64, 96]),
                         (50, 100, 40, 30, [224, 224])]:
    t = F.resized_crop(tensor, i, j, h, w, size, InterpolationMode.BILINEAR, antialias=False)
    pixels.append({"window": [i, j, h, w], "size": size,
                   "tensor": raw("rrc_%d_%d_%d_%d.ten" % (i, j, h, w), t.permute(1, 2, 0).numpy())})
expect["resized_crop"] = pixels

# ---------------------------------------------------------- ColorJitter
camera_decoded = Image.open(os.path.join(photos, "camera_gray.png"))
adjust = {"brightness": F.adjust_brightness, "contrast": F.adjust_contrast,
          "saturation": F.adjust_saturation, "hue": F.adjust_hue}
color = []
for src_name, img in [("chelsea", chelsea_decoded), ("camera", camera_decoded)]:
    for op, factors in [("brightness", [0.0, 0.37, 1.0, 1.61]), ("contrast", [0.2, 0.77, 1.45]),
                        ("saturation", [0.0, 0.5, 1.9]), ("hue", [-0.5, -0.31, 0.02, 0.25, 0.5])]:
        for f in factors:
            f32 = float(np.float32(f))   # torch draws float32 factors
            out_img = np.asarray(adjust[op](img, f32))
            color.append({"source": src_name, "op": op, "factor": f32,
                          "out": raw("color_%s_%s_%g" % (src_name, op, f), out_img)})
# a whole ColorJitter: the order and factors torchvision drew under a seed
jitter = []
cj = torchvision.transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)
for seed in range(6):
    torch.manual_seed(seed)
    order, b, c, sat, h = cj.get_params(cj.brightness, cj.contrast, cj.saturation, cj.hue)
    torch.manual_seed(seed)
    out_img = np.asarray(cj(chelsea_decoded))
    jitter.append({"order": order.tolist(), "factors": [b, c, sat, h],
                   "out": raw("jitter_%d" % seed, out_img)})
expect["color"] = color
expect["jitter"] = jitter

# ---------------------------------------------------------------- CIFAR
rng = np.random.default_rng(7)
cifar = []
for variant, label_bytes, n in [("cifar10", 1, 7), ("cifar100", 2, 9)]:
    recs = rng.integers(0, 256, size=(n, label_bytes + 3072), dtype=np.uint8)
    if variant == "cifar10":
        recs[:, 0] = rng.integers(0, 10, n)
    else:
        recs[:, 0] = rng.integers(0, 20, n)
        recs[:, 1] = rng.integers(0, 100, n)
    name = variant + ".bin"
    recs.tofile(os.path.join(out, name))
    data = np.fromfile(os.path.join(out, name), np.uint8).reshape(n, label_bytes + 3072)
    hwc = data[:, label_bytes:].reshape(n, 3, 32, 32).transpose(0, 2, 3, 1)
    cifar.append({"variant": variant, "file": name, "count": n,
                  "pixels": raw(name + ".hwc", hwc),
                  "labels": [data[:, k].tolist() for k in range(label_bytes)]})
expect["cifar"] = cifar

with open(os.path.join(out, "expect.json"), "w") as f:
    json.dump(expect, f)
