#!/usr/bin/env python3
"""Golden values for the worker's SmolLM2 tests, from an independent implementation:
Hugging Face transformers reading the same GGUF file (dequantised to fp32).

Writes worker/tests/fixtures/smollm2_golden.json:
  - prompt: the token ids of a fixed chat prompt, and for every position the log-sum-exp
    of the logits, the logits at a fixed set of vocabulary ids, and the top-5 ids;
  - persona_loss: token ids and assistant-only loss masks of the first conversations of
    the shipped eval set, and the mean loss over the masked tokens.

Run by scripts/reference/run.sh (which makes the Python environment); CI never runs it.
"""
import json, sys, pathlib
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from chat_mask import assistant_masked

REPO = pathlib.Path(__file__).resolve().parents[2]
gguf = pathlib.Path(sys.argv[1])
out = REPO / "worker/tests/fixtures/smollm2_golden.json"

torch.manual_seed(0)
tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32)
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

    convs = [json.loads(l) for l in (REPO / "worker/data/persona/eval.jsonl").read_text().splitlines()[:4]]
    rows, total, count = [], 0.0, 0
    for c in convs:
        ids, mask = assistant_masked(tok, c["messages"])
        x = torch.tensor([ids])
        lp = torch.log_softmax(model(x).logits[0, :-1].float(), -1)
        tgt = torch.tensor(ids[1:])
        nll = -lp.gather(1, tgt[:, None])[:, 0]
        m = torch.tensor(mask[1:], dtype=torch.bool)
        total += nll[m].sum().item()
        count += int(m.sum())
        rows.append({"ids": ids, "mask": mask})
    persona = {"conversations": rows, "mean_loss": total / count, "count": count}

out.write_text(json.dumps({"model_sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                           "transformers": __import__("transformers").__version__, "torch": torch.__version__,
                           "prompt": prompt, "persona_loss": persona}) + "\n")
print(f"wrote {out}: prompt of {len(prompt['ids'])} tokens; persona loss {persona['mean_loss']:.6f} over {count} tokens")
