#!/usr/bin/env bash
# The demo retrained from the triage desk's decisions (docs/desk.md, "Measured").
#
# A simulation, said plainly: the demo's labels file with 30 % of the training days' labels
# flipped (a poor first labeling pass) → the pipeline → the desk scores the demo replay with
# that model → a scripted "team" decides the flagged posts and the uncertain tab of those
# days over the desk's API, as TweetEval's labels say → the pipeline again with
# split.desk_labels = true. Prints F2 / ROC-AUC / minutes before and after.
#
# Run from the repository after `cargo build --release -p flagship-cli` (and `cargo xtask
# setup`): bash scripts/desk_retrain_demo.sh [WORK_DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${FLAGSHIP_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/flagship}
EXP=${1:-$(mktemp -d)}
[ -x "$BIN" ] || { echo "no $BIN: run \`cargo build --release -p flagship-cli\` first (or set FLAGSHIP_BIN)"; exit 2; }
mkdir -p "$EXP"
export FLAGSHIP_VENV=$ROOT/.venv
export FLAGSHIP_DESK_TOKEN=experiment-token-0123456789abcdef0123456789
cd "$EXP"
export ROOT
echo "working in $EXP"
rm -rf data desk.sqlite labels-noisy.csv
python3 - <<'PY'
import csv, random, gzip, json, os
random.seed(7)
times = {}
for line in gzip.open(os.environ['ROOT'] + '/fixtures/demo/stream.jsonl.gz', 'rt'):
    d = json.loads(line)['data']
    times[d['id']] = d['created_at']
rows = list(csv.DictReader(open(os.environ['ROOT'] + '/fixtures/demo/labels.csv')))
flipped = 0
with open('labels-noisy.csv', 'w', newline='') as f:
    w = csv.writer(f); w.writerow(['id', 'label'])
    for r in rows:
        label = int(r['label'])
        if times[r['id']] < '2022-07-12' and random.random() < 0.30:
            label = 2 if label in (0, 1) else 0
            flipped += 1
        w.writerow([r['id'], label])
print(f"labels-noisy.csv: {flipped} of {len(rows)} labels flipped (days 1-6 only)")
PY
# The demo's own config, with its outputs here, the noisy labels, and a desk token.
write_config() {
python3 - "$1" <<'PY'
import os, sys
root = os.environ['ROOT']
t = open(root + '/fixtures/demo/flagship.toml').read()
t = t.replace('"../../data/demo/', '"data/')
t = t.replace('labels = "labels.csv"', 'labels = "labels-noisy.csv"\ndesk_labels = ' + sys.argv[1])
t = t.replace('replay = "stream.jsonl.gz"', 'replay = "' + root + '/fixtures/demo/stream.jsonl.gz"')
t = t.replace('[pipeline]', '[desk]\ntoken_env = "FLAGSHIP_DESK_TOKEN"\n\n[pipeline]')
open('flagship.toml', 'w').write(t)
PY
}
write_config false
echo "== before: the pipeline on the noisy labels"
"$BIN" --config flagship.toml pipeline 2>/dev/null | tail -6
cp data/reports/report.json report-before.json

echo "== the desk: the demo replayed, scored by that model; the team decides"
"$BIN" --config flagship.toml desk --replay $ROOT/fixtures/demo/stream.jsonl.gz --bind 127.0.0.1:8099 > desk.log 2>&1 &
DESK=$!
for i in $(seq 1 120); do grep -q "posts seen" desk.log && break; sleep 1; done
grep "desk:" desk.log
python3 - <<'PY'
import csv, json, gzip, os, urllib.request, urllib.parse
tok = os.environ['FLAGSHIP_DESK_TOKEN']
truth = {r['id']: int(r['label']) for r in csv.DictReader(open(os.environ['ROOT'] + '/fixtures/demo/labels.csv'))}
times = {}
for line in gzip.open(os.environ['ROOT'] + '/fixtures/demo/stream.jsonl.gz', 'rt'):
    d = json.loads(line)['data']; times[d['id']] = d['created_at']
def call(path, data=None):
    req = urllib.request.Request('http://127.0.0.1:8099' + path, data=data,
                                 headers={'Authorization': 'Bearer ' + tok})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())
counts = {}
for view in ['view=queue&order=newest', 'view=uncertain']:
    posts = call('/api/queue?limit=10000&' + view)
    for p in posts:
        if times[p['id']] >= '2022-07-12':   # the team triaged days 1-6
            continue
        d = 'needs_reply' if truth[p['id']] in (0, 1) else 'no_reply'
        call('/api/decide', urllib.parse.urlencode({'id': p['id'], 'decision': d}).encode())
        key = (view.split('&')[0], 'flagged' if p['need_support'] else 'unflagged', d)
        counts[key] = counts.get(key, 0) + 1
for k, v in sorted(counts.items()):
    print('decided', k, v)
print('today', call('/api/today'))
PY
kill -TERM $DESK; wait $DESK || true
tail -2 desk.log
"$BIN" --config flagship.toml desk export --format labels --out desk-labels.csv
echo "== after: the pipeline with split.desk_labels = true"
write_config true
"$BIN" --config flagship.toml pipeline 2>/dev/null | grep -E "desk|F2|verdict|split" | head -12
cp data/reports/report.json report-after.json
python3 - <<'PY'
import json
for n in ['before', 'after']:
    r = json.load(open(f'report-{n}.json'))
    b = r['model']['binary']
    print(n, 'F2', round(b.get('f2', float('nan')), 3), 'AUC', round(r['ranking']['roc_auc'], 3),
          'wasted', round(r['times']['wasted_minutes'], 1), 'missed', round(r['times']['missed_minutes'], 1),
          'success', r['verdict']['success'])
PY
