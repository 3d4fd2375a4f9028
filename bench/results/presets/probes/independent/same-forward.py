import sys, os, json, struct, math
sys.argv=["tmil.py","transmil","0","0"]
os.environ["ATT"]="nystrom"
import numpy as np, torch, h5py, csv
exec(open("/work/w/tm-investigate/tmil.py").read().split("m={\"transmil\"")[0].replace('d=pickle.load(open(f"{OUT}/cache.pkl","rb"))','d=None').replace('X=[torch.from_numpy(f) for f in d["feats"]]; y=d["y"]','').replace("D=128; H=64","D=128; H=64"))
sys.path.insert(0,"/work/main/tests/reference")
import mexd_ref as ref
p=ref.load_safetensors("/work/w/mod-0.02-0.1/tm-probe/model.safetensors")
p={k: torch.from_numpy(np.asarray(v)) if not torch.is_tensor(v) else v for k,v in (p[0] if isinstance(p,tuple) else p).items()}
m=TransMIL(); m.eval()
sd={}
A="adapter1."
mp={"fc1.0.weight":"fc1.weight","fc1.0.bias":"fc1.bias","cls":"cls_token","norm.weight":"norm.weight","norm.bias":"norm.bias"}
for L,l in (("l1","layer1"),("l2","layer2")):
    mp[f"{L}.norm.weight"]=f"{l}.norm.weight"; mp[f"{L}.norm.bias"]=f"{l}.norm.bias"
    mp[f"{L}.attn.qkv.weight"]=f"{l}.attn.qkv.weight"; mp[f"{L}.attn.o.0.weight"]=f"{l}.attn.out.weight"; mp[f"{L}.attn.o.0.bias"]=f"{l}.attn.out.bias"
    mp[f"{L}.attn.res.weight"]=f"{l}.attn.res_conv.weight"
for k in (7,5,3):
    mp[f"pos.p{k}.weight"]=f"ppeg.conv{k}.weight"; mp[f"pos.p{k}.bias"]=f"ppeg.conv{k}.bias"
for k,v in mp.items(): sd[k]=p[A+v].float().reshape(m.state_dict()[k].shape)
hw,hb=p[A+"head.weight"].float(),p[A+"head.bias"].float()
sd["fc2.weight"]=(hw[1]-hw[0])[None]; sd["fc2.bias"]=(hb[1]-hb[0])[None]
m.load_state_dict(sd)
rows=list(csv.DictReader(open("pred.csv")))
print(rows[0].keys())
for r in rows[:8]:
    x=torch.from_numpy(h5py.File(f"/work/w/mod-0.02-0.1/h5_files/{r['slide_id']}.h5")["features"][:]).float()
    with torch.no_grad(): z=m(x).item()
    pt=1/(1+math.exp(-z))
    print(r['slide_id'], x.shape[0], "mexd p(tumor)", r.get('p_tumor') or r.get('tumor') or r, "helper", round(pt,5))
