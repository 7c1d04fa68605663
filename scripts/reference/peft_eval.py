#!/usr/bin/env python3
"""Checks a worker-trained adapter with an independent implementation: loads the run's
PEFT adapter (RUN/adapter) into Hugging Face PEFT on top of transformers' SmolLM2 (read
from the same GGUF, fp32), recomputes the eval loss of the job's eval split with the same
rendering, assistant-only masking and packing, and compares it with the worker's own
figures in RUN/summary.json.

    peft_eval.py RUN_DIR        (run by scripts/reference/run.sh peft RUN_DIR)
"""
import json, pathlib, sys, tomllib
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from chat_mask import assistant_masked
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


# Pack as the worker does: the token stream cut every seq+1 tokens, targets shifted by one,
# the last row padded with EOS and no loss.
ids, train = [], []
for line in eval_path.read_text().splitlines():
    if line.strip():
        i, t = assistant_masked(tok, json.loads(line)["messages"])
        ids += i
        train += t
pad = tok.convert_tokens_to_ids(tok.eos_token)
rows = []
for s in range(0, len(ids), seq + 1):
    c, t = ids[s : s + seq + 1], train[s : s + seq + 1]
    if len(c) < 2:
        continue
    inp = c[:-1] + [pad] * (seq - len(c) + 1)
    tgt = [c[i] if t[i] else -100 for i in range(1, len(c))] + [-100] * (seq - len(c) + 1)
    rows.append((inp, tgt))


def eval_loss(model):
    total, count = 0.0, 0
    with torch.no_grad():
        for b in range(0, len(rows), batch):
            chunk = rows[b : b + batch]
            x = torch.tensor([r[0] for r in chunk])
            y = torch.tensor([r[1] for r in chunk])
            logits = model(input_ids=x).logits.float()
            total += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                                       ignore_index=-100, reduction="sum").item()
            count += int((y != -100).sum())
    return total / count


summary = json.loads((run / "summary.json").read_text())
before = eval_loss(base)
peft_model = PeftModel.from_pretrained(base, run / "adapter").eval()
after = eval_loss(peft_model)
print(f"eval split: {eval_path.name}, {len(rows)} rows of {seq} tokens")
print(f"{'':18}{'worker':>10}{'PEFT':>10}{'|diff|':>10}")
for name, w, p in [("base model", summary["eval_loss_before"], before), ("with adapter", summary["eval_loss_after"], after)]:
    print(f"{name:18}{w:10.5f}{p:10.5f}{abs(w - p):10.1e}")
tol = 1e-3
ok = abs(summary["eval_loss_after"] - after) < tol and abs(summary["eval_loss_before"] - before) < tol
print(("OK" if ok else "MISMATCH") + f": agreement within {tol}")
sys.exit(0 if ok else 1)
