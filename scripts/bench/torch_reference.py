#!/usr/bin/env python3
"""The PyTorch reference for `molt-worker bench`: the same LoRA training steps on the same
model (SmolLM2-135M-Instruct from the same GGUF, dequantised to fp32 by transformers),
batch x seq random tokens, LoRA on q,k,v,o via PEFT, AdamW, gradient clipping.

    torch_reference.py MODEL.gguf [--batch 4] [--seq 256] [--rank 16] [--steps 3]
                       [--warmup 1] [--dtype fp32|bf16] [--json]

`--dtype bf16` runs the forward and backward under CPU bf16 autocast (master weights fp32).
Prints the same figures as the worker: step time, tokens/s, peak memory (VmHWM).
"""
import argparse, json, pathlib, time
import torch
from transformers import AutoModelForCausalLM
from peft import LoraConfig, get_peft_model


def peak_rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--batch", type=int, default=4)
ap.add_argument("--seq", type=int, default=256)
ap.add_argument("--rank", type=int, default=16)
ap.add_argument("--steps", type=int, default=3)
ap.add_argument("--warmup", type=int, default=1)
ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
ap.add_argument("--json", action="store_true")
a = ap.parse_args()

gguf = pathlib.Path(a.model)
torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32)
model.config.use_cache = False
model = get_peft_model(model, LoraConfig(r=a.rank, lora_alpha=2 * a.rank, lora_dropout=0.0,
                                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM"))
model.train()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
vocab = model.config.vocab_size
tokens = torch.randint(0, vocab, (a.batch, a.seq + 1))
inputs, labels = tokens[:, :-1], tokens[:, 1:]

losses, timed = [], 0.0
for i in range(a.warmup + a.steps):
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.dtype == "bf16"):
        logits = model(input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, vocab), labels.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if i >= a.warmup:
        timed += time.perf_counter() - t0
    losses.append(loss.item())

step = timed / a.steps
report = {"impl": f"pytorch {torch.__version__} {a.dtype}", "threads": torch.get_num_threads(), "batch": a.batch,
          "seq": a.seq, "rank": a.rank, "steps": a.steps, "step_seconds": step,
          "tokens_per_second": a.batch * a.seq / step, "peak_rss_mib": peak_rss_mib(),
          "loss_first": losses[0], "loss_last": losses[-1]}
if a.json:
    print(json.dumps(report))
else:
    for k, v in report.items():
        print(f"{k:18} {v}")
