"""timm side of test_vit's position-embedding resize: what timm 0.9.16's
ViT checkpoint filter makes of a pos_embed saved for another grid.

For each case (timm name, source img_size, target img_size) it builds the
source model, runs vision_transformer.checkpoint_filter_fn on its state_dict
for a target model, and writes OUT_DIR/<i>.safetensors with
  src   the source pos_embed (1, prefix + g*g, D)
  want  the filtered pos_embed (1, prefix + G*G, D)

usage: timm_pos_embed.py OUT_DIR NAME,SRC_SIZE,DST_SIZE...
"""
import os
import sys

import timm
import torch
from timm.models.vision_transformer import checkpoint_filter_fn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_ref import write_safetensors  # noqa: E402


def main():
    torch.manual_seed(0)
    out_dir = sys.argv[1]
    for i, spec in enumerate(sys.argv[2:]):
        name, src, dst = spec.split(",")
        kw = dict(pretrained=False, depth=1, num_classes=3)
        a = timm.create_model(name, img_size=int(src), **kw)
        b = timm.create_model(name, img_size=int(dst), **kw)
        with torch.no_grad():
            a.pos_embed.normal_()  # order one values: the resize's error is relative
        sd = {k: v.detach().clone() for k, v in a.state_dict().items()}
        want = checkpoint_filter_fn(sd, b)["pos_embed"]
        write_safetensors(os.path.join(out_dir, f"{i}.safetensors"),
                          {"src": sd["pos_embed"], "want": want.detach()}, {"case": spec})


if __name__ == "__main__":
    main()
