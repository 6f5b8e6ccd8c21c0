#!/usr/bin/env bash
# The main job on the embedded SQLite default: create an experiment from the
# bundled sample dataset, run its lifecycle, attach an eval with
# mark-deployable, and print the checkpoint and its history.
set -euo pipefail
cd "$(dirname "$0")/.."
TL=".venv/bin/trainledger"
OUT="demo-output"
export TRAINLEDGER_STORE="${TRAINLEDGER_STORE:-sqlite:///$OUT/ledger.db}"
export TRAINLEDGER_ACTOR="${TRAINLEDGER_ACTOR:-demo}"
rm -rf "$OUT"
mkdir -p "$OUT"

json_field() { .venv/bin/python -c "import json,sys; print(json.load(sys.stdin)$1)"; }

echo "== experiment create"
RUN_ID=$($TL --json experiment create --profile local-reader --family qwen2.5-7b-reader \
    --backend dry-run --dataset examples/data/sample.jsonl --benchmark-export-id demo-bench \
    --output-dir "$OUT/checkpoints" | json_field "['trainRunId']")
$TL run show "$RUN_ID"

echo; echo "== run start, checkpoint register, run complete"
$TL run start "$RUN_ID" >/dev/null
mkdir -p "$OUT/checkpoints/adapter"
echo '{"peft_type": "LORA", "r": 16}' > "$OUT/checkpoints/adapter/adapter_config.json"
CHECKPOINT_ID=$($TL --json checkpoint register "$RUN_ID" --family qwen2.5-7b-reader \
    --artifact "$OUT/checkpoints/adapter" | json_field "['checkpointId']")
$TL run complete "$RUN_ID" >/dev/null

echo; echo "== eval attach --mark-deployable"
$TL eval attach "$CHECKPOINT_ID" --eval-id "demo-eval-1" --benchmark-id demo-bench \
    --family qwen2.5-7b-reader --mode prompt_assisted --baseline 0.61 --candidate 0.68 \
    --verdict pass --mark-deployable

echo; echo "== history of the run"
$TL history "$RUN_ID"
echo; echo "== history of the checkpoint"
$TL history "$CHECKPOINT_ID"
