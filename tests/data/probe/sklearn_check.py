"""Reference check for `ldae probe fit`: a synthetic matrix, fitted by ldae and by scikit-learn on ldae's folds.

usage: sklearn_check.py LDAE_BINARY WORKDIR  -> prints JSON {metric: [ldae_mean, sklearn_mean]} and exits 1 if
any differs by more than 1e-6 (AUC/accuracy/MCC/R²) or 1e-6 relative (MAE/RMSE)."""
import json, subprocess, sys, os
import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler
from sklearn.metrics import roc_auc_score, accuracy_score, matthews_corrcoef, mean_absolute_error, mean_squared_error, r2_score

ldae, work = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(3)
n, e, pats = 60, 16, 12
x = rng.normal(size=(n, e)).astype(np.float32) * rng.uniform(0.5, 3, size=e).astype(np.float32) + 1.5
pid = [f"P{i % pats:02d}" for i in range(n)]
uid = [f"1.2.3.{i}" for i in range(n)]
logit = x[:, 0] - 0.5 * x[:, 3] + rng.normal(size=n)
cls = np.where(logit > np.median(logit), "AD", "CN")
age = 70 + 2 * x[:, 1] - x[:, 2] + rng.normal(size=n)
np.save(os.path.join(work, "emb.npy"), x)
with open(os.path.join(work, "emb.csv"), "w") as f:
    f.write("series_uid,patient_id,model\n" + "".join(f"{u},{p},synthetic\n" for u, p in zip(uid, pid)))
with open(os.path.join(work, "labels.csv"), "w") as f:
    f.write("series_uid,dx,age\n" + "".join(f"{u},{c},{a:.6f}\n" for u, c, a in zip(uid, cls, age)))
lam, out, bad = 0.05, {}, False
for target, extra in [("dx", ["--classes", "AD,CN"]), ("age", [])]:
    r = subprocess.run([ldae, "probe", "fit", "--embeddings", f"{work}/emb.npy", "--index", f"{work}/emb.csv",
                        "--labels", f"{work}/labels.csv", "--target", target, *extra, "--folds", "4",
                        "--lambda", str(lam), "-o", f"{work}/{target}.safetensors", "--json"],
                       capture_output=True, text=True, check=True)
    rep = json.loads(r.stdout)
    folds = np.array(rep["fold_of_row"])
    assert rep["series_uid"] == uid
    for g in set(pid):  # no patient in two folds
        assert len(set(folds[[p == g for p in pid]])) == 1
    per = {}
    for f in sorted(set(folds)):
        tr, te = folds != f, folds == f
        sc = StandardScaler().fit(x[tr].astype(np.float64))
        xtr, xte = sc.transform(x[tr].astype(np.float64)), sc.transform(x[te].astype(np.float64))
        ntr = int(tr.sum())
        if target == "dx":
            y = (cls == "AD")
            m = LogisticRegression(C=1 / (2 * lam * ntr), tol=1e-12, max_iter=100000).fit(xtr, y[tr])
            s = m.decision_function(xte); p = s > 0
            vals = {"roc_auc": roc_auc_score(y[te], s), "accuracy": accuracy_score(y[te], p), "mcc": matthews_corrcoef(y[te], p)}
        else:
            m = Ridge(alpha=lam * ntr).fit(xtr, age[tr]); p = m.predict(xte)
            vals = {"mae": mean_absolute_error(age[te], p), "rmse": mean_squared_error(age[te], p) ** 0.5, "r2": r2_score(age[te], p)}
        for k, v in vals.items():
            per.setdefault(k, []).append(v)
    for k, v in per.items():
        mine = rep["summary"][k]
        ref_mean, ref_std = float(np.mean(v)), float(np.std(v))
        out[k] = {"ldae": [mine["mean"], mine["std"]], "sklearn": [ref_mean, ref_std]}
        tol = 1e-6 * max(1.0, abs(ref_mean))
        if abs(mine["mean"] - ref_mean) > tol or abs(mine["std"] - ref_std) > tol:
            bad = True
print(json.dumps(out))
sys.exit(1 if bad else 0)
