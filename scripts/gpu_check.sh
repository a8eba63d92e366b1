#!/usr/bin/env bash
# padkit on a CUDA GPU: the device tests, then `padkit bench speed` at real shapes with random weights.
#
#   bash scripts/gpu_check.sh --prepare     # here, once: copies the default tokenizer into .gpu/ (3.5 MB)
#   bash scripts/gpu_check.sh [OUT_DIR]     # there: a machine with CUDA, PyTorch, transformers and peft
#
# It installs nothing: padkit runs from this working tree (PYTHONPATH=src); wheels in .whl/ (carried, see the
# device tool's notes) are added to the path if present. Writes to OUT_DIR (default $OUT, else runs/gpu):
# gpu.csv, device-tests.log, bench-<shape>.json for each shape and bench.log. Ends in about 6 minutes on an
# H200 (bf16, 128 new tokens, fastest of 2 rounds, batch 1 and 32).
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
    src=$(python -c "from padkit.models.loading import resolve_model_dir; print(resolve_model_dir('smollm2-135m-instruct'))")
    mkdir -p .gpu/tokenizer
    cp "$src"/tokenizer.json "$src"/tokenizer_config.json .gpu/tokenizer/
    [ -f "$src/chat_template.jinja" ] && cp "$src/chat_template.jinja" .gpu/tokenizer/
    echo "tokenizer copied to .gpu/tokenizer; carry .gpu (and .whl if any) to the GPU machine"
    exit 0
fi

OUT_DIR=${1:-${OUT:-runs/gpu}}
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible to torch')" || exit 2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT_DIR/gpu.csv" 2>&1
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__, 'peft', peft.__version__)" | tee -a "$OUT_DIR/gpu.csv"

echo "== device tests (CUDA tests included) =="
timeout 180 python3 -m pytest -q -p no:cacheprovider tests/test_device.py 2>&1 | tee "$OUT_DIR/device-tests.log"

TOKENIZER=.gpu/tokenizer
[ -f "$TOKENIZER/tokenizer.json" ] || { echo "missing $TOKENIZER: run 'bash scripts/gpu_check.sh --prepare' first"; exit 2; }
for shape in smollm2-135m llama-3.2-1b llama-3.1-8b qwen2.5-7b; do
    echo "== bench speed: $shape (dummy weights, random LoRA r16 PersRM, bf16) =="
    timeout 150 python3 -m padkit.cli.main bench speed --load-format dummy --base "$shape" --tokenizer "$TOKENIZER" \
        --device cuda --dtype bfloat16 --new-tokens 128 --batch-size 32 --repeats 2 --json \
        > "$OUT_DIR/bench-$shape.json" 2>> "$OUT_DIR/bench.log" \
        && python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f\"PAD/plain b1 {r['pad_vs_plain']:.2f}, \
b32 {r['pad_batch8_tps']/r['plain_batch8_tps']:.2f}; plain b1 {r['plain_tps']:.1f} tok/s, PAD b1 {r['pad_tps']:.1f}\")" \
        "$OUT_DIR/bench-$shape.json" || echo "bench $shape failed: see bench.log"
done
