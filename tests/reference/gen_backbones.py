#!/usr/bin/python3
"""gen_backbones.py [OUT_DIR]: fixtures for the backbone tests (tests/test-backbone.c).

Writes to tests/fixtures/backbones/ (or OUT_DIR):
  prep.safetensors     tiles of random 8-bit RGB and torchvision's preprocessing of them:
                       F.interpolate(tile / 255, size, mode="bilinear", antialias=True,
                       align_corners=False), then normalisation with the ImageNet mean/std;
                       cases that shrink (the 256 -> 224 of CLAM), keep, enlarge, and non-square.
  resnet-tiny.safetensors  a backbone file (mexd-backbone/1, docs/MODEL-FORMAT.md) holding a
                       narrow ResNet "trunc" (stem width 16, blocks [2, 1, 2]) built from
                       torchvision's own Bottleneck, seeded random weights and batch-norm
                       statistics, torchvision state-dict names;
  resnet-tiny-io.safetensors  its input tiles (72 x 72, resized to 64) and the reference
                       features and intermediates (stem, layer1..3) in fp32;
  tiles/t{i}_{x}_{y}.png  the same three tiles as PNG files (for `mexd extract`), and
                       odd-size.png, a 56 x 40 tile (its error when mixed with them);
  vit-tiny.safetensors, vit-tiny-io.safetensors  the same for a small ViT written here from
                       timm's semantics (dim 48, 3 heads, depth 2, layer scale, 64 x 64 input):
                       tokens, block0, block1 and the class-token features.
Run with Debian's python3-torch and python3-torchvision:
  /usr/bin/python3 tests/reference/gen_backbones.py
`gen_backbones.py --full DIR` instead writes the full-size checks of the slow suite to DIR
(torchvision's resnet50(), the reference ViT as ViT-S/16 and the reference CTransPath, 224 x
224): nothing of it is committed.
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import Bottleneck, conv1x1

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mexd_ref as ref  # noqa: E402  (save_safetensors)

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


class ResNetTrunc(nn.Module):
    """torchvision's ResNet-50 through layer3 + global average pooling, with the stem width and
    block counts as parameters (width 64, blocks (3, 4, 6) is ResNet-50-trunc; same names)."""

    def __init__(self, blocks=(3, 4, 6), width=64):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(width, blocks[0])
        self.layer2 = self._make_layer(width * 2, blocks[1], 2)
        self.layer3 = self._make_layer(width * 4, blocks[2], 2)

    def _make_layer(self, planes, n, stride=1):
        down = None
        if stride != 1 or self.inplanes != planes * 4:
            down = nn.Sequential(conv1x1(self.inplanes, planes * 4, stride), nn.BatchNorm2d(planes * 4))
        layers = [Bottleneck(self.inplanes, planes, stride, down)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def forward(self, x, trace=None):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        if trace is not None:
            trace["stem"] = x
        for name in ("layer1", "layer2", "layer3"):
            x = getattr(self, name)(x)
            if trace is not None:
                trace[name] = x
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


class ViT(nn.Module):
    """A ViT written here from timm's VisionTransformer semantics (the reference issue 4 asks for):
    16x16 patch embedding (a strided conv), class token, learned position embedding, pre-norm
    blocks x + ls1 * attn(norm1(x)), x + ls2 * mlp(norm2(x)) with LayerNorm eps 1e-6, qkv with
    bias, exact GELU, optional layer scale (timm's `ls1.gamma`), final norm, the class token out.
    Parameter names are timm's."""

    def __init__(self, dim, depth, heads, img=224, patch=16, mlp_ratio=4, layer_scale=False):
        super().__init__()
        self.heads = heads
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, patch, patch)
        n = (img // patch) ** 2
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            b = nn.Module()
            b.norm1 = nn.LayerNorm(dim, eps=1e-6)
            b.attn = nn.Module()
            b.attn.qkv = nn.Linear(dim, 3 * dim)
            b.attn.proj = nn.Linear(dim, dim)
            b.norm2 = nn.LayerNorm(dim, eps=1e-6)
            b.mlp = nn.Module()
            b.mlp.fc1 = nn.Linear(dim, dim * mlp_ratio)
            b.mlp.fc2 = nn.Linear(dim * mlp_ratio, dim)
            if layer_scale:
                b.ls1 = nn.Module()
                b.ls1.gamma = nn.Parameter(torch.rand(dim) + 0.5)
                b.ls2 = nn.Module()
                b.ls2.gamma = nn.Parameter(torch.rand(dim) + 0.5)
            self.blocks.append(b)
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x, trace=None):
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        if trace is not None:
            trace["tokens"] = x
        B, T, D = x.shape
        H = self.heads
        for i, b in enumerate(self.blocks):
            q, k, v = b.attn.qkv(b.norm1(x)).reshape(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)
            a = ((q @ k.transpose(-2, -1)) * (D // H) ** -0.5).softmax(dim=-1)
            o = b.attn.proj((a @ v).transpose(1, 2).reshape(B, T, D))
            x = x + (b.ls1.gamma * o if hasattr(b, "ls1") else o)
            m = b.mlp.fc2(F.gelu(b.mlp.fc1(b.norm2(x))))
            x = x + (b.ls2.gamma * m if hasattr(b, "ls2") else m)
            if trace is not None:
                trace[f"block{i}"] = x
        return self.norm(x)[:, 0]


def swin_window_partition(x, ws):
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, C)


def swin_window_reverse(w, ws, H, W):
    B = w.shape[0] // ((H // ws) * (W // ws))
    x = w.view(B, H // ws, W // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, -1)


class SwinBlock(nn.Module):
    def __init__(self, dim, res, heads, ws, shift, mlp_ratio=4):
        super().__init__()
        if res <= ws:
            ws, shift = res, 0
        self.dim, self.res, self.heads, self.ws, self.shift = dim, res, heads, ws, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(dim, 3 * dim)
        self.attn.proj = nn.Linear(dim, dim)
        self.attn.relative_position_bias_table = nn.Parameter(torch.randn((2 * ws - 1) ** 2, heads) * 0.5)
        c = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
        rel = (c[:, :, None] - c[:, None, :]).permute(1, 2, 0) + (ws - 1)
        rel[:, :, 0] *= 2 * ws - 1
        self.attn.register_buffer("relative_position_index", rel.sum(-1))
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, dim * mlp_ratio)
        self.mlp.fc2 = nn.Linear(dim * mlp_ratio, dim)
        mask = None
        if shift:
            img = torch.zeros(1, res, res, 1)
            cnt = 0
            for h in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
                for w in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
                    img[:, h, w, :] = cnt
                    cnt += 1
            mw = swin_window_partition(img, ws).squeeze(-1)
            mask = (mw[:, None, :] - mw[:, :, None]).ne(0).float() * -100.0
        self.register_buffer("attn_mask", mask)

    def forward(self, x):
        B, L, C = x.shape
        H = W = self.res
        ws, nh = self.ws, self.heads
        h = self.norm1(x).view(B, H, W, C)
        if self.shift:
            h = torch.roll(h, (-self.shift, -self.shift), dims=(1, 2))
        w = swin_window_partition(h, ws)
        Bw, N, _ = w.shape
        q, k, v = self.attn.qkv(w).reshape(Bw, N, 3, nh, C // nh).permute(2, 0, 3, 1, 4)
        a = (q * (C // nh) ** -0.5) @ k.transpose(-2, -1)
        bias = self.attn.relative_position_bias_table[self.attn.relative_position_index.view(-1)]
        a = a + bias.view(N, N, -1).permute(2, 0, 1).unsqueeze(0)
        if self.attn_mask is not None:
            nW = self.attn_mask.shape[0]
            a = (a.view(Bw // nW, nW, nh, N, N) + self.attn_mask.unsqueeze(1).unsqueeze(0)).view(-1, nh, N, N)
        o = self.attn.proj((a.softmax(-1) @ v).transpose(1, 2).reshape(Bw, N, C))
        h = swin_window_reverse(o.view(-1, ws, ws, C), ws, H, W)
        if self.shift:
            h = torch.roll(h, (self.shift, self.shift), dims=(1, 2))
        x = x + h.reshape(B, L, C)
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class PatchMerging(nn.Module):
    def __init__(self, dim, res):
        super().__init__()
        self.res = res
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):
        B, L, C = x.shape
        x = x.view(B, self.res, self.res, C)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(B, -1, 4 * C)))


class CTransPath(nn.Module):
    """CTransPath (TransPath's ctran.py: timm 0.5.4's swin_tiny_patch4_window7_224 with ConvStem),
    written here from those semantics with their parameter names: a conv stem (3x3/2 conv, BN, ReLU
    twice, then a 1x1 conv to embed_dim), LayerNorm, four stages of Swin blocks (window attention
    with a relative position bias, every second block on windows shifted by ws/2 with the -100
    mask, windows shrunk to the resolution when it is smaller), patch merging between stages,
    final LayerNorm and the mean over tokens.  Swin-T: embed 96, depths 2,2,6,2, heads 3,6,12,24,
    window 7 -> 768-d."""

    def __init__(self, img=224, embed=96, depths=(2, 2, 6, 2), heads=(3, 6, 12, 24), ws=7):
        super().__init__()
        self.patch_embed = nn.Module()
        e8 = embed // 8
        self.patch_embed.proj = nn.Sequential(
            nn.Conv2d(3, e8, 3, 2, 1, bias=False), nn.BatchNorm2d(e8), nn.ReLU(),
            nn.Conv2d(e8, 2 * e8, 3, 2, 1, bias=False), nn.BatchNorm2d(2 * e8), nn.ReLU(),
            nn.Conv2d(2 * e8, embed, 1))
        self.patch_embed.norm = nn.LayerNorm(embed)
        self.layers = nn.ModuleList()
        res, dim = img // 4, embed
        for i, d in enumerate(depths):
            layer = nn.Module()
            layer.blocks = nn.ModuleList([SwinBlock(dim, res, heads[i], ws, 0 if j % 2 == 0 else ws // 2)
                                          for j in range(d)])
            layer.downsample = PatchMerging(dim, res) if i < len(depths) - 1 else None
            self.layers.append(layer)
            if i < len(depths) - 1:
                res, dim = res // 2, dim * 2
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, trace=None):
        x = self.patch_embed.norm(self.patch_embed.proj(x).flatten(2).transpose(1, 2))
        if trace is not None:
            trace["stem"] = x
        for i, layer in enumerate(self.layers):
            for b in layer.blocks:
                x = b(x)
            if layer.downsample is not None:
                x = layer.downsample(x)
            if trace is not None:
                trace[f"stage{i}"] = x
        return self.norm(x).mean(1)


def preprocess(tiles_u8, size, mean=MEAN, std=STD):
    """tiles [B, H, W, 3] uint8 -> [B, 3, size[0], size[1]] float32, torchvision's tensor path."""
    x = torch.from_numpy(tiles_u8).permute(0, 3, 1, 2).float() / 255.0
    if tuple(x.shape[2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (x - m) / s


def randomise_bn(model, g):
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            c = mod.num_features
            mod.weight.data = torch.rand(c, generator=g) + 0.5
            mod.bias.data = torch.randn(c, generator=g) * 0.1
            mod.running_mean.data = torch.randn(c, generator=g) * 0.1
            mod.running_var.data = torch.rand(c, generator=g) + 0.5


def resnet_config(blocks, width, size):
    return {"arch": "resnet50-trunc", "blocks": list(blocks), "width": width, "input_size": size,
            "mean": MEAN, "std": STD, "output_dim": width * 16}


def backbone_tensors(model):
    return {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def full_resnet50(out):
    """The slow check (tests/slow/resnet50-full.sh): torchvision's own resnet50() with seeded
    weights and batch-norm statistics -> OUT/resnet50.pth (its state dict, for tools/convert.py)
    and OUT/resnet50-io.safetensors (two 256 x 256 tiles, their 224 x 224 input and the 1024-d
    features of the network through layer3 + global average pooling)."""
    import torchvision
    torch.manual_seed(11)
    m = torchvision.models.resnet50()
    randomise_bn(m, torch.Generator().manual_seed(12))
    m.eval()
    torch.save(m.state_dict(), os.path.join(out, "resnet50.pth"))
    rng = np.random.default_rng(13)
    tiles = rng.integers(0, 256, size=(2, 256, 256, 3), dtype=np.uint8)
    with torch.no_grad():
        x = preprocess(tiles, (224, 224))
        h = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        tr = {"stem": h}
        for name in ("layer1", "layer2", "layer3"):
            h = getattr(m, name)(h)
            tr[name] = h
        feats = F.adaptive_avg_pool2d(h, 1).flatten(1)
    io = {"pixels": tiles.astype(np.int32), "input": x.numpy(), "features": feats.numpy()}
    io.update({k: v.numpy() for k, v in tr.items()})
    ref.save_safetensors(os.path.join(out, "resnet50-io.safetensors"), io, {"tile": "256", "batch": "2"})
    print(f"wrote {out}/resnet50.pth and resnet50-io.safetensors: features {tuple(feats.shape)}")
    # ViT-S/16 at 224 x 224 (the reference ViT above at full size; no layer scale, as timm's)
    torch.manual_seed(14)
    vit = ViT(384, 12, 6, img=224).eval()
    torch.save(vit.state_dict(), os.path.join(out, "vit-s16.pth"))
    with torch.no_grad():
        tr = {}
        vf = vit(x, tr)
    io = {"pixels": tiles.astype(np.int32), "input": x.numpy(), "features": vf.numpy(),
          "tokens": tr["tokens"].numpy(), "block11": tr["block11"].numpy()}
    ref.save_safetensors(os.path.join(out, "vit-s16-io.safetensors"), io, {"tile": "256", "batch": "2"})
    print(f"wrote {out}/vit-s16.pth and vit-s16-io.safetensors: features {tuple(vf.shape)}")
    # CTransPath at full size (Swin-T: embed 96, depths 2,2,6,2, window 7), checkpoint layout
    torch.manual_seed(15)
    ct = CTransPath()
    randomise_bn(ct, torch.Generator().manual_seed(16))
    ct.eval()
    torch.save({"model": ct.state_dict()}, os.path.join(out, "ctranspath.pth"))
    with torch.no_grad():
        tr = {}
        cf = ct(x, tr)
    io = {"pixels": tiles.astype(np.int32), "input": x.numpy(), "features": cf.numpy()}
    io.update({k: v.numpy() for k, v in tr.items()})
    ref.save_safetensors(os.path.join(out, "ctranspath-io.safetensors"), io, {"tile": "256", "batch": "2"})
    print(f"wrote {out}/ctranspath.pth and ctranspath-io.safetensors: features {tuple(cf.shape)}")


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--full":
        full_resnet50(sys.argv[2])
        return
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "backbones")
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20261125)

    # preprocessing cases: (B, H, W, OH, OW)
    cases = [(1, 256, 256, 224, 224), (1, 40, 40, 40, 40), (2, 23, 31, 64, 48), (1, 97, 60, 33, 50)]
    t = {}
    for i, (b, h, w, oh, ow) in enumerate(cases):
        tiles = rng.integers(0, 256, size=(b, h, w, 3), dtype=np.uint8)
        t[f"case{i}.pixels"] = tiles.astype(np.int32)
        t[f"case{i}.y"] = preprocess(tiles, (oh, ow)).numpy()
    ref.save_safetensors(os.path.join(out, "prep.safetensors"), t,
                         {"cases": json.dumps(cases), "mean": json.dumps(MEAN), "std": json.dumps(STD)})

    # a narrow ResNet-trunc
    torch.manual_seed(7)
    g = torch.Generator().manual_seed(8)
    blocks, width, size = (2, 1, 2), 16, 64
    model = ResNetTrunc(blocks, width)
    randomise_bn(model, g)
    model.eval()
    cfg = resnet_config(blocks, width, size)
    ref.save_safetensors(os.path.join(out, "resnet-tiny.safetensors"), backbone_tensors(model),
                         {"mexd.format": "mexd-backbone/1", "mexd.config": json.dumps(cfg)})
    tiles = rng.integers(0, 256, size=(3, 72, 72, 3), dtype=np.uint8)
    with torch.no_grad():
        x = preprocess(tiles, (size, size))
        tr = {}
        feats = model(x, tr)
    io = {"pixels": tiles.astype(np.int32), "input": x.numpy(), "features": feats.numpy()}
    io.update({k: v.numpy() for k, v in tr.items()})
    ref.save_safetensors(os.path.join(out, "resnet-tiny-io.safetensors"), io,
                         {"tile": "72", "batch": "3"})
    # the same tiles as PNG files for `mexd extract` (names sort in this order; _X_Y coordinates)
    from PIL import Image
    tdir = os.path.join(out, "tiles")
    os.makedirs(tdir, exist_ok=True)
    for i, (x, y) in enumerate([(0, 0), (72, 0), (0, 72)]):
        Image.fromarray(tiles[i]).save(os.path.join(tdir, f"t{i}_{x}_{y}.png"))
    # a tile of another size (56 x 40), for `mexd extract`'s error
    Image.fromarray(np.full((40, 56, 3), 200, np.uint8)).save(os.path.join(out, "odd-size.png"))
    print(f"wrote fixtures to {out}: features {tuple(feats.shape)}, |f| mean {feats.abs().mean():.4f}")

    # a small ViT with layer scale (dim 48, 3 heads, depth 2, 64 x 64 input: 16 patches)
    torch.manual_seed(21)
    vit = ViT(48, 2, 3, img=64, layer_scale=True).eval()
    vcfg = {"arch": "vit-s16", "dim": 48, "depth": 2, "heads": 3, "input_size": 64, "patch": 16,
            "layer_scale": True, "mean": MEAN, "std": STD, "output_dim": 48}
    ref.save_safetensors(os.path.join(out, "vit-tiny.safetensors"), dict(vit.state_dict()),
                         {"mexd.format": "mexd-backbone/1", "mexd.config": json.dumps(vcfg)})
    with torch.no_grad():
        x = preprocess(tiles, (64, 64))
        tr = {}
        vf = vit(x, tr)
    io = {"pixels": tiles.astype(np.int32), "input": x.numpy(), "features": vf.numpy()}
    io.update({k: v.numpy() for k, v in tr.items()})
    ref.save_safetensors(os.path.join(out, "vit-tiny-io.safetensors"), io, {"tile": "72", "batch": "3"})

    # a small CTransPath: embed 16, depths 2,2,2,2, heads 1,2,2,4, window 4, 64 x 64 input
    torch.manual_seed(31)
    ct = CTransPath(img=64, embed=16, depths=(2, 2, 2, 2), heads=(1, 2, 2, 4), ws=4)
    randomise_bn(ct, torch.Generator().manual_seed(32))
    ct.eval()
    ccfg = {"arch": "ctranspath", "embed_dim": 16, "depths": [2, 2, 2, 2], "heads": [1, 2, 2, 4],
            "window": 4, "input_size": 64, "mean": MEAN, "std": STD, "output_dim": 128}
    ref.save_safetensors(os.path.join(out, "ctranspath-tiny.safetensors"),
                         {k: v for k, v in ct.state_dict().items()
                          if not k.endswith(("num_batches_tracked", "relative_position_index", "attn_mask"))},
                         {"mexd.format": "mexd-backbone/1", "mexd.config": json.dumps(ccfg)})
    with torch.no_grad():
        tr = {}
        cf = ct(x, tr)
    io = {"pixels": tiles.astype(np.int32), "input": x.numpy(), "features": cf.numpy()}
    io.update({k: v.numpy() for k, v in tr.items()})
    ref.save_safetensors(os.path.join(out, "ctranspath-tiny-io.safetensors"), io, {"tile": "72", "batch": "3"})


if __name__ == "__main__":
    main()
