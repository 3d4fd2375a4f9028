#!/usr/bin/python3
"""Convert PyTorch checkpoints to mexd model files (docs/MODEL-FORMAT.md).

  convert.py mexd-official IN.pth OUT.safetensors [--dataset camelyon16|tcga|bracs] [--classes a,b,...]
  convert.py transmil IN.pth OUT.safetensors [--classes a,b,...]
  convert.py resnet50 IN.pth OUT.safetensors [--input-size 224] [--mean R,G,B] [--std R,G,B]
  convert.py vit IN.pth OUT.safetensors --arch vit-s16|vit-b16|vit-l16 [--input-size 224] [...]
  convert.py ctranspath IN.pth OUT.safetensors [--input-size 224] [--mean ...] [--std ...]

mexd-official: the authors' stage-1 state dict (MExD, MOE_v3_{2,3,4}.py; MEXD.md §6).
  `trans1.*` is adapter #1 (the TransMIL on the D-dim instance features: its _fc1.0.weight is
  [512, D]) and `agg1.*` is adapter #2 (the TransMIL over the selected 512-dim rows: [512, 512]);
  `gate.weight` is router 0, `gate{r}.weight` router r; `classifier.{r}.*` expert classifier r.
  The top-level `_fc2.*`, `norm2.*`, `confounder_W_q.*`, `confounder_W_k.*` are unused and skipped.
  E = the number of routers.  C = the rows of trans1's logits head (`trans1._fc2.weight`).
  The configuration gets mode `official`, no `diffusion` (the authors released no Diff-C).
  --dataset sets α, the class names and expert_of_class (default: the authors' file for this E):
    camelyon16  E=2  α (0.25, 0.5)            classes normal,tumor                 expert_of_class [0, 1]
    tcga        E=3  α (0.25, 0.5, 0.25)      classes LUAD,LUSC                    expert_of_class [1, 2]
    bracs       E=4  α (0.5, 0.5, 0.5, 0.25)  classes benign,atypical,malignant    expert_of_class [1, 2, 3]
  (BRACS in the paper is the 3-class task; expert 0 is the background expert.)  When the preset's
  class count differs from C, the classes are named class0..class{C-1} (or --classes) and
  expert_of_class defaults to [c+1] when C = E-1 and to [c] when C = E (else give
  --expert-of-class).  --alpha and --expert-of-class override the preset.
transmil: a plain TransMIL state dict (`_fc1.0.*`, `cls_token`, `layer{1,2}.*`, `pos_layer.*`,
  `norm.*`, `_fc2.*`) -> a `mexd-transmil/1` file holding only `adapter1.*` (docs/MODEL-FORMAT.md,
  "TransMIL-only files").

resnet50: a torchvision ResNet-50 state dict (e.g. resnet50(weights=...).state_dict(), the
  backbone of CLAM's features) -> a `mexd-backbone/1` file of arch resnet50-trunc: conv1/bn1 and
  layer1..layer3 with their torchvision names (batch norm is folded at load by libmexd), output
  1024-d after global average pooling.  layer4.*, fc.* and num_batches_tracked are dropped.  The
  stem width and the block counts are read from the state dict (64 and 3, 4, 6 for ResNet-50).
  --input-size (224), --mean / --std (ImageNet's) are the preprocessing recorded in the file.

vit: a timm VisionTransformer state dict (vit_small/base/large_patch16_224, UNI's ViT-L/16) ->
  a `mexd-backbone/1` file of the given arch: patch_embed.proj, cls_token, pos_embed, blocks.i.*
  (norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2, and ls1.gamma / ls2.gamma when the model
  has layer scale), norm; the class token after `norm` is the feature.  head.* is dropped; a
  model with fc_norm (global-average-pool variants) or a different patch size is refused.  dim,
  depth, heads and the MLP ratio come from the state dict (heads from --heads, else the arch's).

ctranspath: the TransPath/CHIEF CTransPath checkpoint (timm 0.5.4 swin_tiny_patch4_window7_224
  with ConvStem; {"model": state_dict}) -> a `mexd-backbone/1` file of arch ctranspath:
  patch_embed.proj.{0,1,3,4,6}.* (conv, BN, conv, BN, 1x1 conv), patch_embed.norm,
  layers.i.blocks.j.{norm1, attn.qkv, attn.proj, attn.relative_position_bias_table, norm2, mlp.*},
  layers.i.downsample.{norm, reduction}, norm.  The relative_position_index and attn_mask buffers
  are recomputed by libmexd and dropped, as are head.* and num_batches_tracked.  embed_dim, depths
  and heads (from the bias tables) come from the state dict; the window from the bias tables too.

mexd-official, transmil: landmarks and pinv iterations are not stored in a state dict; the defaults are the
authors' (256 landmarks, 6 iterations), --landmarks / --pinv-iterations override.  Checkpoints
wrapped as {"state_dict": ...} or {"model": ...} and "module." prefixes are accepted.  Missing
keys or wrong shapes: an error naming the key (exit 1); unexpected keys: a warning.
"""
import argparse
import json
import struct
import sys

import numpy as np
import torch

DATASETS = {
    "camelyon16": dict(E=2, alpha=[0.25, 0.5], classes=["normal", "tumor"], expert_of_class=[0, 1]),
    "tcga": dict(E=3, alpha=[0.25, 0.5, 0.25], classes=["LUAD", "LUSC"], expert_of_class=[1, 2]),
    "bracs": dict(E=4, alpha=[0.5, 0.5, 0.5, 0.25], classes=["benign", "atypical", "malignant"],
                  expert_of_class=[1, 2, 3]),
}
DATASET_OF_E = {2: "camelyon16", 3: "tcga", 4: "bracs"}

# our TransMIL name (no prefix) -> the authors' (Models/TransMIL/net.py) name
TRANSMIL_KEYS = [("fc1.weight", "_fc1.0.weight"), ("fc1.bias", "_fc1.0.bias"), ("cls_token", "cls_token")]
for _L in ("layer1", "layer2"):
    TRANSMIL_KEYS += [(f"{_L}.norm.weight", f"{_L}.norm.weight"), (f"{_L}.norm.bias", f"{_L}.norm.bias"),
                      (f"{_L}.attn.qkv.weight", f"{_L}.attn.to_qkv.weight"),
                      (f"{_L}.attn.out.weight", f"{_L}.attn.to_out.0.weight"),
                      (f"{_L}.attn.out.bias", f"{_L}.attn.to_out.0.bias"),
                      (f"{_L}.attn.res_conv.weight", f"{_L}.attn.res_conv.weight")]
for _k, _pk in ((7, "proj"), (5, "proj1"), (3, "proj2")):
    TRANSMIL_KEYS += [(f"ppeg.conv{_k}.weight", f"pos_layer.{_pk}.weight"), (f"ppeg.conv{_k}.bias", f"pos_layer.{_pk}.bias")]
TRANSMIL_KEYS += [("norm.weight", "norm.weight"), ("norm.bias", "norm.bias"), ("head.weight", "_fc2.weight"),
                  ("head.bias", "_fc2.bias")]
SKIPPED_TOP = ("_fc2.", "norm2.", "confounder_W_q.", "confounder_W_k.")


class ConvertError(Exception):
    pass


def warn(msg):
    print(f"convert.py: warning: {msg}", file=sys.stderr)


def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": {k: str(v) for k, v in metadata.items()}}
    blobs, off = [], 0
    for name, t in tensors.items():
        a = np.ascontiguousarray(t.detach().cpu().to(torch.float32).numpy()).astype("<f4")
        b = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


def load_state_dict(path):
    try:
        obj = torch.load(path, map_location="cpu")
    except Exception as e:  # noqa: BLE001
        raise ConvertError(f"{path}: cannot be read by torch.load: {e}")
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise ConvertError(f"{path}: not a state dict (a {type(obj).__name__})")
    sd = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            warn(f"{k}: not a tensor, ignored")
            continue
        k2 = k[len("module."):] if k.startswith("module.") else k
        sd[k2] = v
    return sd


class Taker:
    """Takes keys out of a state dict with shape checks; remembers what was used."""

    def __init__(self, sd, path):
        self.sd, self.path, self.used = sd, path, set()

    def take(self, key, shape=None, ndim=None):
        if key not in self.sd:
            raise ConvertError(f"{self.path}: missing key {key}")
        t = self.sd[key]
        if not t.is_floating_point():
            raise ConvertError(f"{self.path}: {key} has dtype {t.dtype}, not a float type")
        if ndim is not None and t.dim() != ndim:
            raise ConvertError(f"{self.path}: {key} has shape {list(t.shape)}, expected {ndim} dimensions")
        if shape is not None and tuple(t.shape) != tuple(shape):
            raise ConvertError(f"{self.path}: {key} has shape {list(t.shape)}, expected {list(shape)}")
        self.used.add(key)
        return t.to(torch.float32)

    def leftover(self):
        return [k for k in self.sd if k not in self.used]


def transmil_shapes(fin, W, H, taps, C):
    s = {"fc1.weight": (W, fin), "fc1.bias": (W,), "cls_token": (1, 1, W)}
    for L in ("layer1", "layer2"):
        s.update({f"{L}.norm.weight": (W,), f"{L}.norm.bias": (W,), f"{L}.attn.qkv.weight": (3 * W, W),
                  f"{L}.attn.out.weight": (W, W), f"{L}.attn.out.bias": (W,),
                  f"{L}.attn.res_conv.weight": (H, 1, taps, 1)})
    for k in (7, 5, 3):
        s.update({f"ppeg.conv{k}.weight": (W, 1, k, k), f"ppeg.conv{k}.bias": (W,)})
    s.update({"norm.weight": (W,), "norm.bias": (W,), "head.weight": (C, W), "head.bias": (C,)})
    return s


def take_transmil(tk, src, dst, out, fin=None, W=None, C=None):
    """Maps authors' prefix `src` to our `dst`; returns (in, W, H, taps, C)."""
    pre = src + "." if src else ""
    fc1 = tk.take(pre + "_fc1.0.weight", ndim=2)
    Wf, fin_f = fc1.shape
    if W is not None and Wf != W:
        raise ConvertError(f"{tk.path}: {pre}_fc1.0.weight has shape {list(fc1.shape)}, expected [{W}, {fin or 'in'}]")
    if fin is not None and fin_f != fin:
        raise ConvertError(f"{tk.path}: {pre}_fc1.0.weight has shape {list(fc1.shape)}, expected [{Wf}, {fin}]")
    rc = tk.take(pre + "layer1.attn.res_conv.weight", ndim=4)
    H, taps = rc.shape[0], rc.shape[2]
    if Wf % H != 0 or taps % 2 != 1:
        raise ConvertError(f"{tk.path}: {pre}layer1.attn.res_conv.weight has shape {list(rc.shape)}, expected [H, 1, odd taps, 1] with H dividing {Wf}")
    head = tk.take(pre + "_fc2.weight", ndim=2)
    Cf = head.shape[0]
    if C is not None and Cf != C:
        raise ConvertError(f"{tk.path}: {pre}_fc2.weight has shape {list(head.shape)}, expected [{C}, {Wf}]")
    shapes = transmil_shapes(fin_f, Wf, H, taps, Cf)
    for ours, theirs in TRANSMIL_KEYS:
        out[f"{dst}.{ours}"] = tk.take(pre + theirs, shape=shapes[ours])
    return fin_f, Wf, H, taps, Cf


def parse_list(s, conv, what):
    try:
        return [conv(v) for v in s.split(",")]
    except ValueError:
        raise ConvertError(f"--{what}: cannot parse {s!r}")


def convert_official(args):
    sd = load_state_dict(args.input)
    tk = Taker(sd, args.input)
    out = {}
    D, W, H, taps, C = take_transmil(tk, "trans1", "adapter1", out)
    _, _, H2, taps2, C2 = take_transmil(tk, "agg1", "adapter2", out, fin=W, W=W, C=C)
    if (H2, taps2) != (H, taps):
        raise ConvertError(f"{args.input}: agg1.layer1.attn.res_conv.weight: {H2} heads × {taps2} taps, trans1 has {H} × {taps}")
    E = 1
    while f"gate{E}.weight" in sd:
        E += 1
    if E < 2:
        raise ConvertError(f"{args.input}: missing key gate1.weight (router 1); a MExD checkpoint has E >= 2 routers")
    if E > 4:
        raise ConvertError(f"{args.input}: {E} routers; official mode covers the authors' files with E = 2, 3, 4")
    out["moe.router.0.weight"] = tk.take("gate.weight", shape=(2, W))
    for r in range(1, E):
        out[f"moe.router.{r}.weight"] = tk.take(f"gate{r}.weight", shape=(2, W))
    for r in range(E):
        out[f"moe.classifier.{r}.weight"] = tk.take(f"classifier.{r}.weight", shape=(E, W))
        out[f"moe.classifier.{r}.bias"] = tk.take(f"classifier.{r}.bias", shape=(E,))
    # reorder: adapters, routers, classifiers (as docs/MODEL-FORMAT.md)
    order = [k for k in out if k.startswith("adapter1.")] + [k for k in out if k.startswith("adapter2.")]
    order += [f"moe.router.{r}.weight" for r in range(E)]
    for r in range(E):
        order += [f"moe.classifier.{r}.weight", f"moe.classifier.{r}.bias"]
    out = {k: out[k] for k in order}
    for k in tk.leftover():
        if k.startswith(SKIPPED_TOP):
            continue
        warn(f"unexpected key {k} {list(sd[k].shape)} ignored")
    ds_name = args.dataset or DATASET_OF_E[E]
    ds = DATASETS[ds_name]
    if ds["E"] != E:
        raise ConvertError(f"--dataset {ds_name} is for E = {ds['E']} experts; the checkpoint has {E} routers")
    alpha = parse_list(args.alpha, float, "alpha") if args.alpha else list(ds["alpha"])
    if len(alpha) != E or not all(0 < a <= 1 for a in alpha):
        raise ConvertError(f"--alpha: need {E} values in (0, 1]")
    if args.classes:
        classes = args.classes.split(",")
    elif len(ds["classes"]) == C:
        classes = list(ds["classes"])
    else:
        classes = [f"class{c}" for c in range(C)]
    if len(classes) != C:
        raise ConvertError(f"--classes: {len(classes)} names, the logits head trans1._fc2.weight has {C} rows")
    if args.expert_of_class:
        eoc = parse_list(args.expert_of_class, int, "expert-of-class")
    elif len(ds["expert_of_class"]) == C:
        eoc = list(ds["expert_of_class"])
    elif C == E - 1:
        eoc = [c + 1 for c in range(C)]
    elif C == E:
        eoc = list(range(C))
    else:
        raise ConvertError(f"{C} classes and {E} experts: give --expert-of-class")
    if len(eoc) != C or not all(0 <= e < E for e in eoc):
        raise ConvertError(f"--expert-of-class: need {C} values in 0..{E - 1}")
    cfg = {"feature_dim": D, "width": W, "heads": H, "landmarks": args.landmarks,
           "pinv_iterations": args.pinv_iterations, "res_conv_taps": taps, "classes": classes,
           "experts": E, "alpha": alpha, "expert_of_class": eoc, "mode": "official"}
    write_safetensors(args.output, out, {"mexd.format": "mexd-model/1", "mexd.config": json.dumps(cfg)})
    print(f"{args.output}: MExD stage 1, E = {E}, D = {D}, W = {W}, C = {C} ({','.join(classes)}), "
          f"alpha {alpha}, expert_of_class {eoc}, {len(out)} tensors")


def convert_transmil(args):
    sd = load_state_dict(args.input)
    tk = Taker(sd, args.input)
    out = {}
    D, W, H, taps, C = take_transmil(tk, "", "adapter1", out)
    for k in tk.leftover():
        warn(f"unexpected key {k} {list(sd[k].shape)} ignored")
    classes = args.classes.split(",") if args.classes else [f"class{c}" for c in range(C)]
    if len(classes) != C:
        raise ConvertError(f"--classes: {len(classes)} names, the logits head _fc2.weight has {C} rows")
    cfg = {"feature_dim": D, "width": W, "heads": H, "landmarks": args.landmarks,
           "pinv_iterations": args.pinv_iterations, "res_conv_taps": taps, "classes": classes}
    write_safetensors(args.output, out, {"mexd.format": "mexd-transmil/1", "mexd.config": json.dumps(cfg)})
    print(f"{args.output}: TransMIL, D = {D}, W = {W}, C = {C} ({','.join(classes)}), {len(out)} tensors")


IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def normalisation(args):
    """--mean / --std (ImageNet's by default), checked."""
    mean = parse_list(args.mean, float, "mean") if args.mean else IMAGENET_MEAN
    std = parse_list(args.std, float, "std") if args.std else IMAGENET_STD
    if len(mean) != 3 or len(std) != 3 or not all(v > 0 for v in std):
        raise ConvertError("--mean and --std need 3 values each (std > 0)")
    return mean, std


def write_backbone(path, tensors, cfg):
    write_safetensors(path, tensors, {"mexd.format": "mexd-backbone/1", "mexd.config": json.dumps(cfg)})


def convert_resnet(args):
    sd = load_state_dict(args.input)
    tk = Taker(sd, args.input)
    out = {}
    if "conv1.weight" not in sd:
        raise ConvertError(f"{args.input}: missing key conv1.weight (not a torchvision ResNet state dict)")
    width = sd["conv1.weight"].shape[0]

    def conv_bn(conv, bn, cout, cin, k):
        out[f"{conv}.weight"] = tk.take(f"{conv}.weight", shape=(cout, cin, k, k))
        for s_ in ("weight", "bias", "running_mean", "running_var"):
            out[f"{bn}.{s_}"] = tk.take(f"{bn}.{s_}", shape=(cout,))

    conv_bn("conv1", "bn1", width, 3, 7)
    blocks, inplanes = [], width
    for L in range(3):
        planes = width << L
        n = 0
        while f"layer{L + 1}.{n}.conv1.weight" in sd:
            n += 1
        if n == 0:
            raise ConvertError(f"{args.input}: missing key layer{L + 1}.0.conv1.weight")
        for i in range(n):
            p_ = f"layer{L + 1}.{i}"
            conv_bn(f"{p_}.conv1", f"{p_}.bn1", planes, inplanes, 1)
            conv_bn(f"{p_}.conv2", f"{p_}.bn2", planes, planes, 3)
            conv_bn(f"{p_}.conv3", f"{p_}.bn3", planes * 4, planes, 1)
            if i == 0 and (L > 0 or inplanes != planes * 4):
                conv_bn(f"{p_}.downsample.0", f"{p_}.downsample.1", planes * 4, inplanes, 1)
            inplanes = planes * 4
        blocks.append(n)
    for k in tk.leftover():
        if k.startswith(("layer4.", "fc.")) or k.endswith("num_batches_tracked"):
            continue
        warn(f"unexpected key {k} {list(sd[k].shape)} ignored")
    mean, std = normalisation(args)
    if args.input_size < 32:
        raise ConvertError("--input-size must be at least 32")
    cfg = {"arch": "resnet50-trunc", "blocks": blocks, "width": width, "input_size": args.input_size,
           "mean": mean, "std": std, "output_dim": width * 16}
    write_backbone(args.output, out, cfg)
    print(f"{args.output}: resnet50-trunc, width {width}, blocks {blocks}, {width * 16}-d features, "
          f"input {args.input_size}², {len(out)} tensors")


VIT_HEADS = {"vit-s16": 6, "vit-b16": 12, "vit-l16": 16}


def convert_ctranspath(args):
    sd = load_state_dict(args.input)
    tk = Taker(sd, args.input)
    out = {}
    if "patch_embed.proj.6.weight" not in sd:
        raise ConvertError(f"{args.input}: missing key patch_embed.proj.6.weight (not a CTransPath state dict)")
    E = sd["patch_embed.proj.6.weight"].shape[0]
    e8 = E // 8
    for i, (cin, cout) in ((0, (3, e8)), (3, (e8, 2 * e8))):
        out[f"patch_embed.proj.{i}.weight"] = tk.take(f"patch_embed.proj.{i}.weight", shape=(cout, cin, 3, 3))
        for s_ in ("weight", "bias", "running_mean", "running_var"):
            out[f"patch_embed.proj.{i + 1}.{s_}"] = tk.take(f"patch_embed.proj.{i + 1}.{s_}", shape=(cout,))
    out["patch_embed.proj.6.weight"] = tk.take("patch_embed.proj.6.weight", shape=(E, 2 * e8, 1, 1))
    out["patch_embed.proj.6.bias"] = tk.take("patch_embed.proj.6.bias", shape=(E,))
    out["patch_embed.norm.weight"] = tk.take("patch_embed.norm.weight", shape=(E,))
    out["patch_embed.norm.bias"] = tk.take("patch_embed.norm.bias", shape=(E,))
    depths, heads, window = [], [], None
    for st in range(4):
        D = E << st
        n = 0
        while f"layers.{st}.blocks.{n}.norm1.weight" in sd:
            n += 1
        if n == 0:
            raise ConvertError(f"{args.input}: missing key layers.{st}.blocks.0.norm1.weight")
        depths.append(n)
        tab = sd.get(f"layers.{st}.blocks.0.attn.relative_position_bias_table")
        if tab is None:
            raise ConvertError(f"{args.input}: missing key layers.{st}.blocks.0.attn.relative_position_bias_table")
        heads.append(int(tab.shape[1]))
        span = int(round(tab.shape[0] ** 0.5))
        if st == 0:
            window = (span + 1) // 2
        for j in range(n):
            b = f"layers.{st}.blocks.{j}."
            F_ = D * 4
            for name, shape in (("norm1.weight", (D,)), ("norm1.bias", (D,)), ("attn.qkv.weight", (3 * D, D)),
                                ("attn.qkv.bias", (3 * D,)), ("attn.proj.weight", (D, D)), ("attn.proj.bias", (D,)),
                                ("attn.relative_position_bias_table", tuple(tab.shape)),
                                ("norm2.weight", (D,)), ("norm2.bias", (D,)), ("mlp.fc1.weight", (F_, D)),
                                ("mlp.fc1.bias", (F_,)), ("mlp.fc2.weight", (D, F_)), ("mlp.fc2.bias", (D,))):
                out[b + name] = tk.take(b + name, shape=shape)
        if st < 3:
            p_ = f"layers.{st}.downsample."
            out[p_ + "norm.weight"] = tk.take(p_ + "norm.weight", shape=(4 * D,))
            out[p_ + "norm.bias"] = tk.take(p_ + "norm.bias", shape=(4 * D,))
            out[p_ + "reduction.weight"] = tk.take(p_ + "reduction.weight", shape=(2 * D, 4 * D))
    out["norm.weight"] = tk.take("norm.weight", shape=(8 * E,))
    out["norm.bias"] = tk.take("norm.bias", shape=(8 * E,))
    for k in tk.leftover():
        if k.startswith("head.") or k.endswith(("num_batches_tracked", "relative_position_index", "attn_mask")):
            continue
        warn(f"unexpected key {k} {list(sd[k].shape)} ignored")
    mean, std = normalisation(args)
    cfg = {"arch": "ctranspath", "embed_dim": int(E), "depths": depths, "heads": heads, "window": window,
           "input_size": args.input_size, "mean": mean, "std": std, "output_dim": int(8 * E)}
    write_backbone(args.output, out, cfg)
    print(f"{args.output}: ctranspath, embed {E}, depths {depths}, heads {heads}, window {window}, "
          f"input {args.input_size}², {len(out)} tensors")


def convert_vit(args):
    sd = load_state_dict(args.input)
    tk = Taker(sd, args.input)
    out = {}
    if "patch_embed.proj.weight" not in sd:
        raise ConvertError(f"{args.input}: missing key patch_embed.proj.weight (not a timm ViT state dict)")
    D, cin, P, P2 = sd["patch_embed.proj.weight"].shape
    if cin != 3 or P != P2 or P != 16:
        raise ConvertError(f"{args.input}: patch_embed.proj.weight {list(sd['patch_embed.proj.weight'].shape)}: "
                           "expected [dim, 3, 16, 16]")
    if "fc_norm.weight" in sd:
        raise ConvertError(f"{args.input}: has fc_norm (a global-average-pool ViT); only class-token models are supported")
    depth = 0
    while f"blocks.{depth}.norm1.weight" in sd:
        depth += 1
    if depth == 0:
        raise ConvertError(f"{args.input}: missing key blocks.0.norm1.weight")
    heads = args.heads or VIT_HEADS[args.arch]
    if D % heads:
        raise ConvertError(f"dim {D} is not a multiple of {heads} heads (give --heads)")
    F_ = sd["blocks.0.mlp.fc1.weight"].shape[0] if "blocks.0.mlp.fc1.weight" in sd else 4 * D
    if F_ % D:
        raise ConvertError(f"{args.input}: blocks.0.mlp.fc1.weight has {F_} rows, not a multiple of dim {D}")
    ls = "blocks.0.ls1.gamma" in sd
    T = 1 + (args.input_size // 16) ** 2
    out["patch_embed.proj.weight"] = tk.take("patch_embed.proj.weight", shape=(D, 3, 16, 16))
    out["patch_embed.proj.bias"] = tk.take("patch_embed.proj.bias", shape=(D,))
    out["cls_token"] = tk.take("cls_token", shape=(1, 1, D))
    out["pos_embed"] = tk.take("pos_embed", shape=(1, T, D))
    for i in range(depth):
        b = f"blocks.{i}."
        for name, shape in (("norm1.weight", (D,)), ("norm1.bias", (D,)), ("attn.qkv.weight", (3 * D, D)),
                            ("attn.qkv.bias", (3 * D,)), ("attn.proj.weight", (D, D)), ("attn.proj.bias", (D,)),
                            ("norm2.weight", (D,)), ("norm2.bias", (D,)), ("mlp.fc1.weight", (F_, D)),
                            ("mlp.fc1.bias", (F_,)), ("mlp.fc2.weight", (D, F_)), ("mlp.fc2.bias", (D,))):
            out[b + name] = tk.take(b + name, shape=shape)
        if ls:
            out[b + "ls1.gamma"] = tk.take(b + "ls1.gamma", shape=(D,))
            out[b + "ls2.gamma"] = tk.take(b + "ls2.gamma", shape=(D,))
    out["norm.weight"] = tk.take("norm.weight", shape=(D,))
    out["norm.bias"] = tk.take("norm.bias", shape=(D,))
    for k in tk.leftover():
        if k.startswith("head."):
            continue
        warn(f"unexpected key {k} {list(sd[k].shape)} ignored")
    mean, std = normalisation(args)
    cfg = {"arch": args.arch, "dim": int(D), "depth": depth, "heads": heads, "patch": 16,
           "mlp_ratio": int(F_ // D), "layer_scale": ls, "input_size": args.input_size,
           "mean": mean, "std": std, "output_dim": int(D)}
    write_backbone(args.output, out, cfg)
    print(f"{args.output}: {args.arch}, dim {D}, depth {depth}, heads {heads}, layer scale {ls}, "
          f"input {args.input_size}², {len(out)} tensors")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="convert.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, helptext in (("mexd-official", "the authors' stage-1 MExD state dict"),
                           ("transmil", "a plain TransMIL state dict")):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("input", metavar="IN.pth")
        sp.add_argument("output", metavar="OUT.safetensors")
        sp.add_argument("--classes", help="comma-separated class names, in logit order")
        sp.add_argument("--landmarks", type=int, default=256, help="Nyström landmarks (default 256, the authors')")
        sp.add_argument("--pinv-iterations", type=int, default=6, help="pinv iterations (default 6)")
        if name == "mexd-official":
            sp.add_argument("--dataset", choices=sorted(DATASETS), help="presets for α, classes, expert_of_class")
            sp.add_argument("--alpha", help="comma-separated α_r, r = 0..E-1")
            sp.add_argument("--expert-of-class", help="comma-separated expert of each class")
    sp = sub.add_parser("resnet50", help="a torchvision ResNet-50 state dict (features after layer3)")
    sp.add_argument("input", metavar="IN.pth")
    sp.add_argument("output", metavar="OUT.safetensors")
    sp.add_argument("--input-size", type=int, default=224, help="side the tiles are resized to (224)")
    sp.add_argument("--mean", help="comma-separated normalisation mean (ImageNet's)")
    sp.add_argument("--std", help="comma-separated normalisation std (ImageNet's)")
    sp = sub.add_parser("vit", help="a timm VisionTransformer state dict (class-token output)")
    sp.add_argument("input", metavar="IN.pth")
    sp.add_argument("output", metavar="OUT.safetensors")
    sp.add_argument("--arch", required=True, choices=sorted(VIT_HEADS))
    sp.add_argument("--heads", type=int, help="attention heads (default: the arch's)")
    sp.add_argument("--input-size", type=int, default=224, help="side the tiles are resized to (224)")
    sp.add_argument("--mean", help="comma-separated normalisation mean (ImageNet's)")
    sp.add_argument("--std", help="comma-separated normalisation std (ImageNet's)")
    sp = sub.add_parser("ctranspath", help="the TransPath/CHIEF CTransPath checkpoint")
    sp.add_argument("input", metavar="IN.pth")
    sp.add_argument("output", metavar="OUT.safetensors")
    sp.add_argument("--input-size", type=int, default=224, help="side the tiles are resized to (224)")
    sp.add_argument("--mean", help="comma-separated normalisation mean (ImageNet's)")
    sp.add_argument("--std", help="comma-separated normalisation std (ImageNet's)")
    args = ap.parse_args(argv)
    if args.cmd in ("resnet50", "vit", "ctranspath"):
        try:
            {"resnet50": convert_resnet, "vit": convert_vit, "ctranspath": convert_ctranspath}[args.cmd](args)
        except ConvertError as e:
            print(f"convert.py: error: {e}", file=sys.stderr)
            return 1
        return 0
    if args.landmarks < 1 or args.pinv_iterations < 0:
        print("convert.py: error: --landmarks must be >= 1 and --pinv-iterations >= 0", file=sys.stderr)
        return 1
    try:
        (convert_official if args.cmd == "mexd-official" else convert_transmil)(args)
    except ConvertError as e:
        print(f"convert.py: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
