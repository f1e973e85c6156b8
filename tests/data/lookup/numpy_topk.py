"""Reference for `ldae similar`: exact cosine top-k computed by numpy from an `ldae export --format npy` matrix.

usage: numpy_topk.py NPY INDEX_CSV CASES_JSON
CASES_JSON is a list of {"query": SERIES_UID, "n": N, "patient": ID|null, "since": YYYYMMDD|null,
"until": YYYYMMDD|null, "exclude_patient": bool}. Prints, per case, one JSON line: a list of
{"series_uid", "score"} best first — the same rules as ldae: filters before ranking, the query's own row never
listed, a row without a date never passes a date bound, ties by row order. Scores in float64."""
import csv, json, sys
import numpy as np

x = np.load(sys.argv[1]).astype(np.float64)
with open(sys.argv[2]) as f:
    rows = list(csv.DictReader(f))
assert len(rows) == x.shape[0], (len(rows), x.shape)
norm = np.linalg.norm(x, axis=1, keepdims=True)
x = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
for case in json.load(open(sys.argv[3])):
    qi = next(i for i, r in enumerate(rows) if r["series_uid"] == case["query"])
    q = rows[qi]
    keep = []
    for i, r in enumerate(rows):
        if i == qi:
            continue
        if case.get("patient") and case["patient"] not in (r["patient_id"], r["patient_key"]):
            continue
        if case.get("exclude_patient") and r["patient_key"] == q["patient_key"]:
            continue
        if case.get("since") and (not r["date"] or r["date"] < case["since"]):
            continue
        if case.get("until") and (not r["date"] or r["date"] > case["until"]):
            continue
        keep.append(i)
    scores = x[keep] @ x[qi]
    order = sorted(range(len(keep)), key=lambda j: (-scores[j], keep[j]))[: case["n"]]
    print(json.dumps([{"series_uid": rows[keep[j]]["series_uid"], "score": float(scores[j])} for j in order]))
