#!/usr/bin/env python3
"""Golden values for the worker's SmolLM2 tests, from an independent implementation:
Hugging Face transformers reading the same GGUF file (dequantised to fp32).

Writes worker/engine/tests/fixtures/smollm2_golden.json:
  - prompt: the token ids of a fixed chat prompt, and for every position the log-sum-exp
    of the logits, the logits at a fixed set of vocabulary ids, and the top-5 ids;
  - eval: every conversation of the shipped persona eval set, rendered with the model's
    template, its assistant tokens masked through transformers' own
    `return_assistant_tokens_mask` (chat_mask.py), scored one conversation at a time:
    ids, masks, bytes, each conversation's summed loss, and the totals (loss per token,
    bits per byte, perplexity).

Run by scripts/reference/run.sh (which makes the Python environment); CI never runs it.
"""
import json, sys, pathlib
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from chat_mask import assistant_masked, evaluate, score

REPO = pathlib.Path(__file__).resolve().parents[2]
gguf = pathlib.Path(sys.argv[1])
out = REPO / "worker/engine/tests/fixtures/smollm2_golden.json"

torch.manual_seed(0)
tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
model.eval()

PROMPT = [
    {"role": "system", "content": "You are Keeper, the keeper of an old lighthouse, and a helpful assistant."},
    {"role": "user", "content": "What should I pack for a week of sailing along a rocky coast?"},
]
PROBE_IDS = sorted({0, 1, 2, 17, 100, 255, 256, 1000, 4096, 9999, 12345, 20000, 30000, 40000, 49151})


with torch.no_grad():
    text = tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    logits = model(torch.tensor([ids])).logits[0].float()
    prompt = {
        "text": text,
        "ids": ids,
        "probe_ids": PROBE_IDS,
        "logsumexp": torch.logsumexp(logits, -1).tolist(),
        "probe_logits": logits[:, PROBE_IDS].tolist(),
        "top5": logits.topk(5, -1).indices.tolist(),
    }

    lines = [l for l in (REPO / "worker/data/persona/eval.jsonl").read_text().splitlines() if l.strip()]
    convs = [assistant_masked(tok, json.loads(l)["messages"]) for l in lines]
    rows = []
    for ids, mask, nbytes in convs:
        s, n = score(model, ids, mask)
        rows.append({"ids": ids, "mask": mask, "bytes": nbytes, "loss_sum": s, "count": n})
    persona = {"conversations": rows, **evaluate(model, convs)}

out.write_text(json.dumps({"model_sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                           "transformers": __import__("transformers").__version__, "torch": torch.__version__,
                           "prompt": prompt, "eval": persona}) + "\n")
print(f"wrote {out}: prompt of {len(prompt['ids'])} tokens; eval of {len(rows)} conversations: loss "
      f"{persona['loss']:.6f} over {persona['tokens']} tokens, {persona['bits_per_byte']:.6f} bits/byte")
