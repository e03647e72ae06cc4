#!/bin/bash
# Your own photos, measured: the 500 UKBench photos of ../shared indexed with each method by
# `instance-search index`, queried (20 whole-image queries: N-S, the group's 4 images in the top 4),
# then 100 photos of the demo (96 object views + 4 distractors) added with `--add` and queried, and the
# page's API asked for an added image. Run from the checkout after `make demo` (the demo's images):
#     bash benchmarks/own_photos.sh [WORK_FOLDER]
set -u
cd "$(dirname "$0")/.."
export PATH=$PWD/.venv/bin:$PATH
SHARED=$(cd .. && pwd)/shared/data/ukbench-500/jpg
DEMO=$PWD/data/synthetic/jpg
W=${1:-/tmp/own-photos}; rm -rf $W; mkdir -p $W/ukb $W/more
for f in $SHARED/*.jpg; do ln -s $f $W/ukb/; done
(ls $DEMO/obj*.jpg; ls $DEMO/distractor*.jpg | head -4) | while read f; do ln -s $f $W/more/; done
for m in sift blcf frcnn; do
  echo "== $m"
  /usr/bin/time -f "index: %e s, %M KB" instance-search index --images $W/ukb --method $m --out $W/idx-$m 2>&1 | grep -v "it/s\|img/s" | tail -3
  python - $W/idx-$m $SHARED <<'PY'
import json, subprocess, sys, statistics
idx, shared = sys.argv[1], sys.argv[2]
found = []
for n in range(0, 500, 25):
    out = subprocess.run(["instance-search", "query", "--index", idx, "--image", f"{shared}/ukbench{n:05d}.jpg", "--json", "--results", "4"], capture_output=True, text=True)
    a = json.loads(out.stdout)
    group = {f"ukbench{n // 4 * 4 + k:05d}" for k in range(4)}
    found.append(sum(h["name"] in group for h in a["hits"][:4]))
print(f"query: 20 whole-image queries, N-S (group members in the top 4, query included) {statistics.mean(found):.2f}; last total {a['timings']['total']:.2f} s")
PY
  sha_before=$(sha256sum $W/idx-$m/model.npz | cut -c1-16)
  /usr/bin/time -f "add: %e s" instance-search index --add $W/more --out $W/idx-$m 2>&1 | grep -v "it/s\|img/s" | tail -2
  sha_after=$(sha256sum $W/idx-$m/model.npz | cut -c1-16)
  echo "model unchanged by --add: $([ $sha_before = $sha_after ] && echo yes || echo NO)"
  instance-search query --index $W/idx-$m --image $DEMO/obj01_v0.jpg --results 6 2>/dev/null | sed -n '4,9p'
  python - $W/idx-$m <<'PY'
import sys
from instance_search.config import load_params
from instance_search.index import load_index
from instance_search.web.app import create_app
ix = load_index(sys.argv[1])
c = create_app([ix], params=load_params("params.yaml", "workflow/schemas/params.schema.json")).test_client()
r = c.post("/api/query", json={"image": {"id": 510}, "box": [100, 50, 560, 450], "results": 5})
print("serve:", r.status_code, ix.n_database, "images;", [h["name"] for h in r.get_json()["hits"]])
PY
done
