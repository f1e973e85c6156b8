"""Reference check for `ldae probe fit`: scikit-learn refitted on ldae's own patient-grouped folds.

usage: sklearn_check.py LDAE_BINARY WORKDIR
         a synthetic matrix, fitted by ldae (--embeddings/--index) and by scikit-learn;
       sklearn_check.py --report NPY INDEX_CSV LABELS_CSV REPORT_JSON TARGET CLASSES|- LAMBDA
         an `ldae export --format npy` matrix and the `ldae probe fit --json` report of a fit on the store.
Prints JSON {metric: {ldae: [mean, std], sklearn: [mean, std]}} and exits 1 if any mean or std differs by more
than 1e-6 (absolute; relative for MAE/RMSE above 1)."""
import csv, json, subprocess, sys, os
import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler
from sklearn.metrics import roc_auc_score, accuracy_score, matthews_corrcoef, mean_absolute_error, mean_squared_error, r2_score


def reference(x, folds, y, classes, lam):
    """Per-metric fold values of scikit-learn on ldae's folds (`y`: bools for classes, floats otherwise)."""
    per = {}
    for f in sorted(set(folds)):
        tr, te = folds != f, folds == f
        sc = StandardScaler().fit(x[tr].astype(np.float64))
        xtr, xte = sc.transform(x[tr].astype(np.float64)), sc.transform(x[te].astype(np.float64))
        ntr = int(tr.sum())
        if classes:
            m = LogisticRegression(C=1 / (2 * lam * ntr), tol=1e-12, max_iter=100000).fit(xtr, y[tr])
            s = m.decision_function(xte); p = s > 0
            vals = {"accuracy": accuracy_score(y[te], p), "mcc": matthews_corrcoef(y[te], p)}
            if len(set(y[te])) == 2:
                vals["roc_auc"] = roc_auc_score(y[te], s)
        else:
            m = Ridge(alpha=lam * ntr).fit(xtr, y[tr]); p = m.predict(xte)
            vals = {"mae": mean_absolute_error(y[te], p), "rmse": mean_squared_error(y[te], p) ** 0.5}
            if np.var(y[te]) > 0:
                vals["r2"] = r2_score(y[te], p)
        for k, v in vals.items():
            per.setdefault(k, []).append(v)
    return per


def compare(rep, per, out):
    bad = False
    for k, v in per.items():
        mine = rep["summary"][k]
        ref_mean, ref_std = float(np.mean(v)), float(np.std(v))
        out[k] = {"ldae": [mine["mean"], mine["std"]], "sklearn": [ref_mean, ref_std]}
        tol = 1e-6 * max(1.0, abs(ref_mean))
        if abs(mine["mean"] - ref_mean) > tol or abs(mine["std"] - ref_std) > tol:
            bad = True
    return bad


def synthetic(ldae, work):
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
        y = (cls == "AD") if target == "dx" else age
        bad |= compare(rep, reference(x, folds, y, target == "dx", lam), out)
    return out, bad


def from_report(npy, index, labels, report, target, classes, lam):
    x = np.load(npy)
    with open(index) as f:
        rows = list(csv.DictReader(f))
    with open(labels) as f:
        lab = list(csv.DictReader(f))
    rep = json.load(open(report))
    at = {r["series_uid"]: i for i, r in enumerate(rows)}
    pick = [at[u] for u in rep["series_uid"]]
    x, rows = x[pick], [rows[i] for i in pick]
    # Labels keyed like ldae keys them: series_uid, else patient_id + date.
    if "series_uid" in lab[0]:
        value = {l["series_uid"]: l[target] for l in lab}
        raw = [value[r["series_uid"]] for r in rows]
    else:
        value = {(l["patient_id"], l["date"]): l[target] for l in lab}
        raw = [value[(r["patient_id"], r["date"])] for r in rows]
    folds = np.array(rep["fold_of_row"])
    groups = [r["patient_key"] for r in rows]
    for g in set(groups):
        assert len(set(folds[[p == g for p in groups]])) == 1, f"patient {g} in two folds"
    if classes != "-":
        y = np.array([v == classes.split(",")[0] for v in raw])
    else:
        y = np.array([float(v) for v in raw])
    out = {}
    return out, compare(rep, reference(x, folds, y, classes != "-", lam), out)


if sys.argv[1] == "--report":
    out, bad = from_report(*sys.argv[2:8], float(sys.argv[8]))
else:
    out, bad = synthetic(sys.argv[1], sys.argv[2])
print(json.dumps(out))
sys.exit(1 if bad else 0)
