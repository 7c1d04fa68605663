"""Assistant-token masks and per-conversation scoring with Hugging Face tools, shared by the
reference scripts.

The mask is derived independently of the worker: the model's ChatML template is restated
with Jinja `{% generation %}` markers around what the assistant must produce (its content,
`<|im_end|>` and the newline after it), and transformers' own
`apply_chat_template(..., return_assistant_tokens_mask=True)` turns the marked character
spans into a token mask. `marked_template` checks that the marked template renders exactly
the model's own text, so the two are the same conversation. (The worker instead renders
prefixes of the conversation and takes the text between them; the Rust tests check that
both give the same masks.)
"""
import math

import torch

# SmolLM2's ChatML template (tokenizer.chat_template) with the assistant's part marked.
MARKED_CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' + '\n' }}{% endgeneration %}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def marked_template(tok, messages):
    """The marked template, after checking it renders `messages` as the model's own does."""
    own = tok.apply_chat_template(messages, tokenize=False)
    marked = tok.apply_chat_template(messages, tokenize=False, chat_template=MARKED_CHATML)
    assert own == marked, "the marked template must render the model's own text"
    return MARKED_CHATML


def assistant_masked(tok, messages):
    """Token ids of the rendered conversation, a 0/1 mask of its assistant tokens, and the
    UTF-8 byte count of the text the masked tokens spell."""
    out = tok.apply_chat_template(
        messages,
        chat_template=marked_template(tok, messages),
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    text = tok.apply_chat_template(messages, tokenize=False)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    assert enc["input_ids"] == ids, "the template tokenizes as the text does"
    # Bytes of the masked text: the union of the masked tokens' character spans (after
    # the first token, which nothing predicts), measured in UTF-8.
    covered = set()
    for i, (a, b) in enumerate(enc["offset_mapping"]):
        if i > 0 and mask[i]:
            covered.update(range(a, b))
    nbytes = sum(len(text[c].encode("utf-8")) for c in covered)
    return ids, mask, nbytes


def score(model, ids, mask):
    """Summed −log p of the masked tokens (each predicted from the ones before it), and how
    many, for one conversation on its own."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    lp = torch.log_softmax(logits, -1)
    tgt = torch.tensor(ids[1:])
    nll = -lp.gather(1, tgt[:, None])[:, 0].double()
    m = torch.tensor(mask[1:], dtype=torch.bool)
    return nll[m].sum().item(), int(m.sum())


def evaluate(model, convs):
    """Per-conversation scoring of `convs` (each `(ids, mask, bytes)`): loss per token, bits
    per byte, perplexity, as the worker reports them."""
    total, count, nbytes = 0.0, 0, 0
    for ids, mask, b in convs:
        s, n = score(model, ids, mask)
        total += s
        count += n
        nbytes += b
    loss = total / count
    return {"loss": loss, "tokens": count, "bytes": nbytes, "bits_per_byte": total / math.log(2) / nbytes,
            "perplexity": math.exp(loss)}
