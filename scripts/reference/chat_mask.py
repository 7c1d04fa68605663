"""Assistant-only loss masks with a Hugging Face tokenizer, shared by the reference scripts:
each assistant turn is the text between the conversation rendered up to it with the
generation prompt and rendered through it (the worker locates turns the same way, in Rust)."""


def assistant_masked(tok, messages):
    """Token ids of the rendered conversation and a 0/1 mask of its assistant tokens."""
    text = tok.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = tok.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        through = tok.apply_chat_template(messages[: i + 1], tokenize=False)
        assert text.startswith(through) and through.startswith(before)
        spans.append((len(before), len(through)))
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(a <= s < b for a, b in spans)) for s, _ in enc["offset_mapping"]]
    return enc["input_ids"], mask
