#!/usr/bin/env bash
# The main job on the embedded SQLite default: a dry run with the bundled
# reference trainer, then a real (small, CPU-only) training of the bundled
# sample dataset with the example trainer, an eval attached with
# mark-deployable, the checkpoint's lineage, the run's history and `verify`.
set -euo pipefail
cd "$(dirname "$0")/.."
TL=".venv/bin/trainledger"
OUT="demo-output"
export TRAINLEDGER_STORE="${TRAINLEDGER_STORE:-sqlite:///$OUT/ledger.db}"
export TRAINLEDGER_ACTOR="${TRAINLEDGER_ACTOR:-demo}"
FAMILY="qwen2.5-7b-reader"
rm -rf "$OUT"
mkdir -p "$OUT"

json_field() { .venv/bin/python -c "import json,sys; print(json.load(sys.stdin)$1)"; }

echo "== dry run: experiment create --backend dry-run, train (bundled reference trainer)"
DRY_RUN_ID=$($TL --json experiment create --profile local-reader --family "$FAMILY" \
    --backend dry-run --dataset examples/data/sample.jsonl --benchmark-export-id demo-bench \
    --output-dir "$OUT/dry-run" | json_field "['trainRunId']")
$TL train "$DRY_RUN_ID" > "$OUT/dry-run.txt"
head -n 1 "$OUT/dry-run.txt"

# The example trainer is a CPU stand-in for a peft-trl-orpo trainer: it trains
# a low-rank preference scorer and writes a PEFT-style adapter directory.
echo; echo "== experiment create --backend peft-trl-orpo --tier small-gpu"
RUN_ID=$($TL --json experiment create --profile local-reader --family "$FAMILY" \
    --backend peft-trl-orpo --tier small-gpu --dataset examples/data/sample.jsonl \
    --benchmark-export-id demo-bench --output-dir "$OUT/checkpoints" \
    --hp learningRate=0.01 --hp loraRank=8 --hp batchSize=4 --hp gradientAccumulation=1 \
    --budget-minutes 5 | json_field "['trainRunId']")
$TL run show "$RUN_ID"

echo; echo "== train --scripts-dir examples/trainer"
$TL --json train "$RUN_ID" --scripts-dir examples/trainer > "$OUT/train.json"
CHECKPOINT_ID=$(json_field "['checkpointId']" < "$OUT/train.json")
echo "trainer log: $(json_field "['trainerLogPath']" < "$OUT/train.json")"
$TL checkpoint show "$CHECKPOINT_ID"

echo; echo "== eval attach --mark-deployable"
$TL eval attach "$CHECKPOINT_ID" --eval-id "demo-eval-1" --benchmark-id demo-bench \
    --family "$FAMILY" --mode prompt_assisted --baseline 0.61 --candidate 0.68 \
    --verdict pass --mark-deployable >/dev/null

echo; echo "== lineage of the checkpoint"
$TL lineage "$CHECKPOINT_ID"
echo; echo "== history of the run"
$TL history "$RUN_ID"
echo; echo "== verify"
$TL verify

echo; echo "== serve: the ledger over HTTP, with a fresh admin token"
TOKEN=$($TL --json token create "demo-admin-$(date +%s)" --role admin | json_field "['token']")
PORT=$(.venv/bin/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
$TL serve --port "$PORT" > "$OUT/serve.log" 2>&1 &
SERVE_PID=$!
trap 'kill "$SERVE_PID" 2>/dev/null || true' EXIT
# One authenticated request once it answers: GET /v1/stats with the bearer token.
DEMO_TOKEN="$TOKEN" DEMO_PORT="$PORT" .venv/bin/python - <<'PY'
import json, os, time, urllib.request

url = f"http://127.0.0.1:{os.environ['DEMO_PORT']}/v1/stats"
request = urllib.request.Request(url, headers={"Authorization": f"Bearer {os.environ['DEMO_TOKEN']}"})
for _ in range(200):
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            print(f"GET /v1/stats -> {response.status}")
            print(json.dumps(json.load(response), indent=2))
            break
    except OSError:
        time.sleep(0.1)
else:
    raise SystemExit("the service did not answer")
PY
kill -TERM "$SERVE_PID"
wait "$SERVE_PID" 2>/dev/null || true
trap - EXIT
echo "service stopped (its log: $OUT/serve.log)"
