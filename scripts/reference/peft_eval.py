#!/usr/bin/env python3
"""Checks a worker-trained adapter with an independent implementation: loads the run's
PEFT adapter (RUN/adapter) into Hugging Face PEFT on top of transformers' SmolLM2 (read
from the same GGUF, fp32), recomputes the eval loss of the job's eval split with the same
rendering, assistant-only masking and packing, and compares it with the worker's own
figures in RUN/summary.json. Each held-out conversation is scored on its own (as the
worker's eval does), with the assistant mask from transformers' own
`return_assistant_tokens_mask` (chat_mask.py).

    peft_eval.py RUN_DIR        (run by scripts/reference/run.sh peft RUN_DIR)
"""
import json, pathlib, sys, tomllib
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from chat_mask import assistant_masked, evaluate
from peft import PeftModel

run = pathlib.Path(sys.argv[1])
spec = tomllib.loads((run / "job.toml").read_text())
spec_dir = pathlib.Path(json.loads((run / "run.json").read_text())["spec_dir"])
models = pathlib.Path.home() / ".cache/molting/models"
mpath = spec["model"]["path"]
gguf = models / mpath[len("models:"):] if mpath.startswith("models:") else spec_dir / mpath
eval_path = spec_dir / spec["data"]["eval"]
seq, batch = spec["train"]["seq_len"], spec["train"]["batch_size"]

tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
base = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
assert spec["data"]["format"] == "chat"


convs = [assistant_masked(tok, json.loads(l)["messages"]) for l in eval_path.read_text().splitlines() if l.strip()]

summary = json.loads((run / "summary.json").read_text())
before = evaluate(base, convs)
peft_model = PeftModel.from_pretrained(base, run / "adapter").eval()
after = evaluate(peft_model, convs)
print(f"eval split: {eval_path.name}, {len(convs)} conversations, each on its own, {after['tokens']} assistant tokens")
print(f"{'':28}{'worker':>10}{'PEFT':>10}{'rel diff':>10}")
worst = 0.0
for name, w, p in [("base model", summary["eval_before"], before), ("with adapter", summary["eval_after"], after)]:
    for key in ["loss", "bits_per_byte"]:
        rel = abs(w[key] - p[key]) / p[key]
        worst = max(worst, rel)
        print(f"{name + ' ' + key:28}{w[key]:10.5f}{p[key]:10.5f}{rel:10.1e}")
# The worker's bf16 class rounds the frozen products' operands to bf16; PEFT runs fp32.
tol = 1e-4 if spec["train"].get("precision", "fp32") == "fp32" else 2e-2
print(("OK" if worst < tol else "MISMATCH") + f": relative agreement within {tol}")
sys.exit(0 if worst < tol else 1)
