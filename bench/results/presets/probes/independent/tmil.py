# Step 2: independent TransMIL (Shao et al. 2021) in PyTorch + mean-pool MLP baseline.
# Attention: standard full softmax multi-head attention (not Nystrom); padding to a square as in the
# paper's code (repeat the first Np-N tokens); PPEG 7/5/3 depthwise convs + identity on the W x W grid.
# Optimiser: Lookahead(RAdam) lr 1e-3 (k=5, alpha=0.5), batch size 1, one thread.
import os, sys, math, pickle, json, time
os.environ["OPENBLAS_NUM_THREADS"]="1"; os.environ["OMP_NUM_THREADS"]="1"
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F
from sklearn.metrics import roc_auc_score
torch.set_num_threads(1)
model_name=sys.argv[1]; seed=int(sys.argv[2]) if len(sys.argv)>2 else 0
epochs=int(sys.argv[3]) if len(sys.argv)>3 else 10
opt_name=(sys.argv[4] if len(sys.argv)>4 else "lookahead-radam")+("" if os.environ.get("ATT","full")=="full" else "-"+os.environ["ATT"])
OUT="/work/w/tm-investigate"
d=pickle.load(open(f"{OUT}/cache.pkl","rb"))
X=[torch.from_numpy(f) for f in d["feats"]]; y=d["y"]
torch.manual_seed(seed); np.random.seed(seed)
D=128; H=64
class Attn(nn.Module):
    def __init__(s,dim,heads,p):
        super().__init__(); s.h=heads; s.qkv=nn.Linear(dim,3*dim,bias=False); s.o=nn.Linear(dim,dim); s.p=p
    def forward(s,x):
        B,n,dm=x.shape; q,k,v=s.qkv(x).view(B,n,3,s.h,dm//s.h).permute(2,0,3,1,4)
        a=torch.softmax(q@k.transpose(-1,-2)/math.sqrt(dm//s.h),-1)
        a=F.dropout(a,s.p,s.training)
        return s.o((a@v).transpose(1,2).reshape(B,n,dm))
class Nystrom(nn.Module):
    # lucidrains nystrom_attention as used by TransMIL: m landmarks, 6 pinv iterations, residual conv 33
    def __init__(s,dim,heads,p,m=32,iters=6,rk=33):
        super().__init__(); s.h=heads; s.m=m; s.it=iters; s.qkv=nn.Linear(dim,3*dim,bias=False); s.o=nn.Sequential(nn.Linear(dim,dim),nn.Dropout(p))
        s.res=nn.Conv2d(heads,heads,(rk,1),padding=(rk//2,0),groups=heads,bias=False)
    def forward(s,x):
        B,n,dm=x.shape; m=s.m; rem=n%m
        if rem: x=F.pad(x,(0,0,m-rem,0))
        L=x.shape[1]; q,k,v=s.qkv(x).view(B,L,3,s.h,dm//s.h).permute(2,0,3,1,4); q=q*(dm//s.h)**-0.5
        l=math.ceil(n/m); ql=q.reshape(B,s.h,m,l,-1).sum(3)/l; kl=k.reshape(B,s.h,m,l,-1).sum(3)/l
        a1=torch.softmax(q@kl.transpose(-1,-2),-1); a2=torch.softmax(ql@kl.transpose(-1,-2),-1); a3=torch.softmax(ql@k.transpose(-1,-2),-1)
        ax=a2.abs(); z=a2.transpose(-1,-2)/(ax.sum(-1).max()*ax.sum(-2).max()); I=torch.eye(m)
        for _ in range(s.it):
            xz=a2@z; z=0.25*z@(13*I-xz@(15*I-xz@(7*I-xz)))
        out=(a1@z)@(a3@v)+s.res(v)
        out=s.o(out.transpose(1,2).reshape(B,L,dm)); return out[:,-n:]
ATT=os.environ.get("ATT","full")
class TransLayer(nn.Module):
    def __init__(s,dim): super().__init__(); s.norm=nn.LayerNorm(dim); s.attn=Attn(dim,2,0.1) if ATT=="full" else Nystrom(dim,2,0.1)
    def forward(s,x): return x+s.attn(s.norm(x))
class PPEG(nn.Module):
    def __init__(s,dim):
        super().__init__(); s.p7=nn.Conv2d(dim,dim,7,1,3,groups=dim); s.p5=nn.Conv2d(dim,dim,5,1,2,groups=dim); s.p3=nn.Conv2d(dim,dim,3,1,1,groups=dim)
    def forward(s,x,W):
        B,_,C=x.shape; cls,feat=x[:,:1],x[:,1:]
        f=feat.transpose(1,2).reshape(B,C,W,W); f=s.p7(f)+f+s.p5(f)+s.p3(f)
        return torch.cat([cls,f.flatten(2).transpose(1,2)],1)
class TransMIL(nn.Module):
    def __init__(s):
        super().__init__(); s.fc1=nn.Sequential(nn.Linear(D,H),nn.ReLU()); s.cls=nn.Parameter(torch.randn(1,1,H))
        s.l1=TransLayer(H); s.pos=PPEG(H); s.l2=TransLayer(H); s.norm=nn.LayerNorm(H); s.fc2=nn.Linear(H,1)
    def forward(s,x):
        h=s.fc1(x)[None]; N=h.shape[1]; W=int(math.ceil(math.sqrt(N))); add=W*W-N
        h=torch.cat([h,h[:,:add]],1)
        h=torch.cat([s.cls,h],1); h=s.l1(h); h=s.pos(h,W); h=s.l2(h)
        return s.fc2(s.norm(h)[:,0])[0,0]
class MeanMLP(nn.Module):
    def __init__(s): super().__init__(); s.fc1=nn.Sequential(nn.Linear(D,H),nn.ReLU(),nn.Dropout(0.1)); s.fc2=nn.Linear(H,1)
    def forward(s,x): return s.fc2(s.fc1(x).mean(0))[0]
class Lookahead:
    def __init__(s,opt,k=5,alpha=0.5):
        s.opt=opt;s.k=k;s.a=alpha;s.n=0; s.slow=[p.detach().clone() for g in opt.param_groups for p in g["params"]]
    def zero_grad(s): s.opt.zero_grad()
    def step(s):
        s.opt.step(); s.n+=1
        if s.n%s.k==0:
            for p,q in zip([p for g in s.opt.param_groups for p in g["params"]],s.slow):
                q.add_(p.detach()-q,alpha=s.a); p.data.copy_(q)
m={"transmil":TransMIL,"meanmlp":MeanMLP}[model_name]()
if opt_name=="adam": opt=torch.optim.Adam(m.parameters(),1e-3)
else: opt=Lookahead(torch.optim.RAdam(m.parameters(),1e-3))
def predict(idx):
    m.eval()
    with torch.no_grad(): return np.array([m(X[i]).item() for i in idx])
def bce(p,idx): return float(F.binary_cross_entropy_with_logits(torch.tensor(p),torch.tensor(y[idx],dtype=torch.float64)))
trn,val,te=d["trn"],d["val"],d["te"]; log=[]
for ep in range(1,epochs+1):
    t0=time.time(); m.train(); order=np.random.permutation(trn); tl=0
    for i in order:
        opt.zero_grad(); loss=F.binary_cross_entropy_with_logits(m(X[i]),torch.tensor(float(y[i]))); loss.backward(); opt.step(); tl+=loss.item()
    pv,pt=predict(val),predict(te)
    r=dict(epoch=ep,train_loss=tl/len(trn),val_loss=bce(pv,val),val_auc=roc_auc_score(y[val],pv),test_loss=bce(pt,te),test_auc=roc_auc_score(y[te],pt),sec=round(time.time()-t0,1))
    log.append(r); print(json.dumps(r),flush=True)
    np.save(f"{OUT}/pred_{model_name}_{opt_name}_s{seed}_ep{ep}.npy",np.concatenate([pv,pt]))
json.dump(log,open(f"{OUT}/log_{model_name}_{opt_name}_s{seed}.json","w"))
