# Step 1: bag-level confounders in the synth-bags cohort. Single thread.
import os
os.environ["OPENBLAS_NUM_THREADS"]="1"; os.environ["OMP_NUM_THREADS"]="1"
import numpy as np, h5py, csv, pickle, math
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
C="/work/w/mod-0.02-0.1"; OUT="/work/w/tm-investigate"
rows=list(csv.DictReader(open(f"{C}/labels.csv")))
ids=[r["slide_id"] for r in rows]; y=np.array([r["label"]=="tumor" for r in rows],int); split=np.array([r["split"] for r in rows])
feats=[];clus=[];ilab=[]
for s in ids:
    with h5py.File(f"{C}/h5_files/{s}.h5") as f:
        feats.append(f["features"][:]); clus.append(f["instance_cluster"][:]); ilab.append(f["instance_label"][:])
# stratified 20% validation of train (approximation of mexd's seeded per-class shuffle)
tr=np.where(split=="train")[0]; te=np.where(split=="test")[0]
trn,val=train_test_split(tr,test_size=0.2,stratify=y[tr],random_state=0)
pickle.dump(dict(ids=ids,y=y,split=split,feats=feats,clus=clus,ilab=ilab,tr=tr,trn=trn,val=val,te=te),open(f"{OUT}/cache.pkl","wb"))
N=np.array([len(f) for f in feats]); W=np.ceil(np.sqrt(N)).astype(int); pad=W*W-N
K=8
stats={"N":N,"Np-N":pad,"Np-N/Np":pad/(W*W),"N mod 2":N%2,"N mod 3":N%3,"N mod 4":N%4,"W=ceil(sqrt N)":W,"W mod 2":W%2,
       "mean feat norm":np.array([np.linalg.norm(f,axis=1).mean() for f in feats]),
       "norm of mean feat":np.array([np.linalg.norm(f.mean(0)) for f in feats]),
       "lesion frac":np.array([(l>0).mean() for l in ilab]),
       "n lesion":np.array([(l>0).sum() for l in ilab])}
for k in range(K): stats[f"bg cluster {k} frac"]=np.array([(c==k).mean() for c in clus])
stats["bg0+bg1 frac"]=stats["bg cluster 0 frac"]+stats["bg cluster 1 frac"]
# lesion centre row position (lesion region location in the grid)
def lespos(c,l,n):
    w=int(math.ceil(math.sqrt(n))); idx=np.where(l>0)[0]
    return np.nan if len(idx)==0 else idx.mean()/n
stats["lesion pos (idx/N)"]=np.array([lespos(c,l,n) for c,l,n in zip(clus,ilab,N)])
sets={"train(all 272)":tr,"train-fit(217)":trn,"val(55)":val,"test(128)":te}
def auc(idx,v):
    m=~np.isnan(v[idx]); yy=y[idx][m]
    if len(set(yy))<2: return float("nan")
    return roc_auc_score(yy,v[idx][m])
print("AUC of statistic as a tumour score (>0.5: larger value -> tumour)")
print(f"{'statistic':22s}"+"".join(f"{k:>16s}" for k in sets))
res={}
for name,v in stats.items():
    v=v.astype(float); res[name]={k:auc(i,v) for k,i in sets.items()}
    print(f"{name:22s}"+"".join(f"{res[name][k]:16.3f}" for k in sets))
print("\nmeans by class:")
for name in ["N","Np-N","mean feat norm","lesion frac"]:
    for k,i in sets.items():
        print(f"  {name:15s} {k:15s} normal {stats[name][i][y[i]==0].mean():9.3f}  tumor {stats[name][i][y[i]==1].mean():9.3f}")
pickle.dump(stats,open(f"{OUT}/stats.pkl","wb"))
