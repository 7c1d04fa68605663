#!/usr/bin/env python3
"""The PyTorch reference for `molt-worker bench`: the same LoRA training steps on the same
model and the same batches. SmolLM2-135M-Instruct from the same GGUF (dequantised to fp32
by transformers), LoRA via PEFT with the job's rank, alpha, dropout and targets, AdamW,
gradient clipping; the batches are the ones the worker trained on (`molt-worker bench
--batches-out FILE`: the packed Keeper rows, their targets and per-conversation positions,
passed as `position_ids`).

    torch_reference.py MODEL.gguf --batches FILE [--dtype fp32|bf16] [--device cpu|cuda] [--json]

`--dtype bf16` runs the forward and backward under bf16 autocast (master weights fp32).
`--device cuda` runs on GPU 0 (TF32 off, as the worker's pedantic cuBLAS has none), each
timing ending in `torch.cuda.synchronize()`. Prints the worker's figures: median step time,
raw and trained tokens/s, peak memory (VmHWM on the CPU, `max_memory_allocated` on the GPU),
the useful GFLOP/s (the worker's count of the same batches' useful work) and its share of
the best `torch.mm` rate measured here on the model's big shapes.
"""
import argparse, json, pathlib, statistics, time
import torch
from transformers import AutoModelForCausalLM
from peft import LoraConfig, get_peft_model


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def peak_memory_mib(device):
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def best_mm_gflops(dtype, device, hidden, inter, vocab, rows):
    """Best of five `torch.mm` on the shapes the worker's --kernels times."""
    best = 0.0
    for m, k, n in [(rows, hidden, hidden), (rows, hidden, inter), (rows, inter, hidden), (256, hidden, vocab),
                    (256, vocab, hidden)]:
        a, b = torch.randn(m, k, dtype=dtype, device=device), torch.randn(k, n, dtype=dtype, device=device)
        torch.mm(a, b)
        sync(device)
        for _ in range(5):
            t0 = time.perf_counter()
            torch.mm(a, b)
            sync(device)
            best = max(best, 2 * m * k * n / (time.perf_counter() - t0) / 1e9)
    return best


ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--batches", required=True)
ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
ap.add_argument("--json", action="store_true")
a = ap.parse_args()
dev = a.device
if dev == "cuda":
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

run = json.loads(pathlib.Path(a.batches).read_text())
spec, steps, warmup = run["spec"], run["steps"], run["warmup"]
lora, hp = spec["lora"], spec["train"]
modules = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj", "gate": "gate_proj", "up": "up_proj",
           "down": "down_proj"}

gguf = pathlib.Path(a.model)
torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).to(dev)
model.config.use_cache = False
model = get_peft_model(model, LoraConfig(r=lora["rank"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                                         target_modules=[modules[t] for t in lora["targets"]], task_type="CAUSAL_LM"))
model.train()
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=hp["lr"], betas=(hp.get("beta1", 0.9), hp.get("beta2", 0.999)),
                        eps=hp.get("eps", 1e-8), weight_decay=hp.get("weight_decay", 0.0))
vocab = model.config.vocab_size
mm = best_mm_gflops(torch.float32 if a.dtype == "fp32" else torch.bfloat16, dev, model.config.hidden_size,
                    model.config.intermediate_size, vocab, hp["batch_size"] * hp["seq_len"])

times, losses, counted = [], [], 0
for i, micro in enumerate(steps):
    t0 = time.perf_counter()
    total = sum(sum(t >= 0 for t in b["targets"]) for b in micro)
    loss_sum = 0.0
    for b in micro:
        shape = (b["batch"], b["seq"])
        ids = torch.tensor(b["tokens"], device=dev).view(shape)
        pos = torch.tensor(b["positions"], device=dev).view(shape)
        tgt = torch.tensor(b["targets"], device=dev).view(-1)
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=a.dtype == "bf16"):
            logits = model(input_ids=ids, position_ids=pos).logits
            loss = torch.nn.functional.cross_entropy(logits.float().view(-1, vocab), tgt, ignore_index=-1,
                                                     reduction="sum")
        (loss / max(total, 1)).backward()
        loss_sum += loss.item()
    torch.nn.utils.clip_grad_norm_(params, hp.get("max_grad_norm", 1.0))
    opt.step()
    opt.zero_grad(set_to_none=True)
    sync(dev)
    if i >= warmup:
        times.append(time.perf_counter() - t0)
        counted += total
    losses.append(loss_sum / max(total, 1))

step = statistics.median(times)
timed = len(times)
tokens = hp["batch_size"] * hp["seq_len"] * hp.get("grad_accum", 1)
useful = run["useful_gflops_per_step"]
where = torch.cuda.get_device_name(0) if dev == "cuda" else "cpu"
report = {"impl": f"pytorch {torch.__version__} {a.dtype} on {where}", "threads": torch.get_num_threads(),
          "steps": timed, "step_seconds": step, "tokens_per_second": tokens / step,
          "trained_tokens_per_second": counted / timed / step, "useful_gflops_per_second": useful / step,
          "best_gemm_gflops": mm, "share_of_best_gemm": useful / step / mm, "peak_rss_mib": peak_memory_mib(dev),
          "loss_first": losses[0], "loss_last": losses[-1]}
if a.json:
    print(json.dumps(report))
else:
    for k, v in report.items():
        print(f"{k:26} {v}")
