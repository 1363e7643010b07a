"""The assistant-token masks transformers computes for the chat templates in tests/fixtures/chat.

For every <model>/tokenizer_config.json under the fixtures directory this writes
<model>/masks.json: for a set of conversations (single-turn, multi-turn, with a
system prompt, repeated replies, a reply whose text also appears in the prompt,
non-ASCII text with surrounding whitespace), the token ids of the whole
conversation as transformers tokenizes it (`apply_chat_template(messages,
add_generation_prompt=False)`) and the assistant mask of
`apply_chat_template(..., return_assistant_tokens_mask=True, return_dict=True)`.

None of the real templates has `{% generation %}` blocks, so transformers
cannot compute their masks itself. Each gets a copy (GENERATION below, kept in
masks.json as `generation_template`) with `{% generation %}` around what the
model writes after the generation prompt, through the end-of-turn token that
closes the reply (`<|eot_id|>`, `</s>`, `<|im_end|>`; not the newline a
template writes after it, which the model never generates). The copy must
render every conversation byte for byte like the original, so its ids are the
original's, and its mask is transformers' answer for the original. As a second,
independent reference the mask is also computed here from the rendering by
character offsets (each reply located after its generation prompt, extended
over the first special token after it) and must agree.

The tokenizer is fucina's corpus tokenizer.json with the templates' control
tokens added as special tokens (written to <fixtures>/tokenizer.json), so that
they are single tokens as in the real models.

  python scripts/hf_fixtures_masks.py [--fixtures DIR] [--tokenizer FILE] [--only NAME ...]

With --tokenizer (e.g. a real model's tokenizer.json) the masks are computed
with it instead and it is copied to DIR/tokenizer.json (use another DIR: the
committed fixtures use the generated one).
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tokenizers import AddedToken, Tokenizer  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402
import transformers  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CORPUS_TOKENIZER = REPO / "crates/fucina-data/corpus/tokenizer.json"

# The control tokens of the fixture templates (Llama 3, Llama 3.1, Mistral,
# ChatML), special as in the real tokenizers.
CONTROL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|python_tag|>",
    "<|im_start|>",
    "<|im_end|>",
    "<s>",
    "</s>",
    "<unk>",
]


def msg(role, content):
    return {"role": role, "content": content}


SYSTEM = msg("system", "You are a terse assistant.")
U1 = msg("user", "What is the capital of France?")
A1 = msg("assistant", "Paris.")
U2 = msg("user", "And of Italy?")
A2 = msg("assistant", "Rome.")
U3 = msg("user", "Are you sure?")
A3 = msg("assistant", "Yes, Rome is the capital of Italy.")
NON_ASCII_U = msg("user", "  Grüße aus Köln: ä ö ü, 5 €, 日本語\n\n")
NON_ASCII_A = msg("assistant", "\n Gern: ä, €, 日本 \n")

CONVERSATIONS = [
    [U1, A1],
    [SYSTEM, U1, A1],
    [U1, A1, U2, A2],
    [SYSTEM, U1, A1, U2, A2, U3, A3],
    # The same reply twice: each occurrence is its own turn's.
    [U1, A1, U3, A1],
    # The reply's text also appears in the prompt and in the assistant header.
    [msg("user", "Say assistant."), msg("assistant", "assistant")],
    [msg("user", "Repeat: Paris."), A1, msg("user", "Paris."), A1],
    [SYSTEM, NON_ASCII_U, NON_ASCII_A],
]


def replace_once(template, old, new):
    if template.count(old) != 1:
        raise SystemExit(f"expected one {old!r} in the template, found {template.count(old)}")
    return template.replace(old, new)


LLAMA3_TURN = (
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
)
LLAMA3_TURN_GEN = (
    "{% if loop.index0 == 0 %}{{ bos_token }}{% endif %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] | trim + '<|eot_id|>' }}"
    "{% endgeneration %}{% else %}{{ message['content'] | trim + '<|eot_id|>' }}{% endif %}"
)
LLAMA31_TURN = (
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}"
)
LLAMA31_TURN_GEN = (
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['role'] == 'assistant' %}{% generation %}{{- message['content'] | trim + '<|eot_id|>' }}"
    "{% endgeneration %}{%- else %}{{- message['content'] | trim + '<|eot_id|>' }}{%- endif %}"
)
CHATML_TURN = "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
CHATML_TURN_GEN = (
    "{{'<|im_start|>' + message['role'] + '\n'}}{% if message['role'] == 'assistant' %}{% generation %}"
    "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{% else %}{{ message['content'] + '<|im_end|>' }}"
    "{% endif %}{{ '\n' }}"
)
MISTRAL_TURN = "{{- ' ' + message['content'] + eos_token}}"
MISTRAL_TURN_GEN = "{%- generation %}{{- ' ' + message['content'] + eos_token}}{%- endgeneration %}"

# Per fixture directory: the template with {% generation %} blocks added.
GENERATION = {
    "llama-3-8b-instruct": lambda t: replace_once(t, LLAMA3_TURN, LLAMA3_TURN_GEN),
    "llama-3-8b-base": lambda t: replace_once(t, LLAMA3_TURN, LLAMA3_TURN_GEN),
    "llama-3.1-8b-instruct": lambda t: replace_once(t, LLAMA31_TURN, LLAMA31_TURN_GEN),
    "mistral-7b-instruct-v0.1": lambda t: replace_once(t, MISTRAL_TURN, MISTRAL_TURN_GEN),
    "qwen2-7b-instruct": lambda t: replace_once(t, CHATML_TURN, CHATML_TURN_GEN),
    "qwen2-7b-header-always": lambda t: replace_once(t, CHATML_TURN, CHATML_TURN_GEN),
}


def make_tokenizer(path):
    """The corpus tokenizer plus CONTROL_TOKENS as special tokens."""
    tok = Tokenizer.from_file(str(CORPUS_TOKENIZER))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in CONTROL_TOKENS])
    path.write_text(tok.to_str(pretty=True) + "\n", encoding="utf-8")


def load(tokenizer_json, model_dir):
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(tokenizer_json, Path(tmp) / "tokenizer.json")
        shutil.copy(model_dir / "tokenizer_config.json", Path(tmp) / "tokenizer_config.json")
        tok = PreTrainedTokenizerFast.from_pretrained(tmp)
    config = (model_dir / "tokenizer_config.json").read_text(encoding="utf-8")
    for token in (t for t in CONTROL_TOKENS if t in config):
        ids = tok(token, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise SystemExit(f"{tokenizer_json}: {token} is not one token ({ids})")
    return tok


def offsets_reference(tok, template, messages, specials):
    """The mask located by character offsets: each reply from where the
    prompt with the generation prompt ends (or, failing that, where its text
    starts) through the first special token after its text."""
    text = tok.apply_chat_template(messages, chat_template=template, tokenize=False)
    spans, cursor = [], 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = tok.apply_chat_template(
            messages[:i], chat_template=template, tokenize=False, add_generation_prompt=True
        )
        anchor = len(prompt) if text.startswith(prompt) and len(prompt) >= cursor else None
        start_search = cursor if anchor is None else anchor
        at, needle = text.find(m["content"], start_search), m["content"]
        if at < 0:
            needle = m["content"].strip()
            at = text.find(needle, start_search)
        assert at >= 0, (text, m)
        content_end = at + len(needle)
        ends = [(text.find(s, content_end), s) for s in specials]
        ends = [(p, -len(s), s) for p, s in ends if p >= 0]
        p, _, s = min(ends)
        start = at if anchor is None else anchor
        spans.append((start, p + len(s)))
        cursor = p + len(s)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(a < e and b > s for s, e in spans)) for a, b in enc["offset_mapping"]]
    return enc["input_ids"], mask


def generate_one(model_dir, tokenizer_json):
    config = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    original = config["chat_template"]
    if model_dir.name not in GENERATION:
        raise SystemExit(f"{model_dir}: no {{% generation %}} copy of this template in GENERATION")
    generation = GENERATION[model_dir.name](original)
    tok = load(tokenizer_json, model_dir)
    specials = [t.content for t in tok.added_tokens_decoder.values() if t.special]
    out = []
    for messages in CONVERSATIONS:
        for gen in (False, True):
            a = tok.apply_chat_template(messages, chat_template=original, tokenize=False, add_generation_prompt=gen)
            b = tok.apply_chat_template(messages, chat_template=generation, tokenize=False, add_generation_prompt=gen)
            if a != b:
                raise SystemExit(f"{model_dir}: the generation copy renders differently:\n{a!r}\n{b!r}")
        plain = tok.apply_chat_template(messages, chat_template=original, return_dict=True)
        marked = tok.apply_chat_template(
            messages, chat_template=generation, return_dict=True, return_assistant_tokens_mask=True
        )
        ids, mask = list(marked["input_ids"]), list(marked["assistant_masks"])
        if list(plain["input_ids"]) != ids:
            raise SystemExit(f"{model_dir}: ids differ between the template and its generation copy")
        ref_ids, ref_mask = offsets_reference(tok, original, messages, specials)
        if (ref_ids, ref_mask) != (ids, mask):
            raise SystemExit(
                f"{model_dir}: the offsets reference disagrees with transformers' mask for {messages}:\n"
                f"{ref_mask}\n{mask}"
            )
        replies = sum(m["role"] == "assistant" for m in messages)
        runs = sum(1 for j, v in enumerate(mask) if v and (j == 0 or not mask[j - 1]))
        if runs != replies:
            raise SystemExit(f"{model_dir}: {runs} masked runs for {replies} replies: {messages}")
        out.append({"messages": messages, "ids": ids, "mask": mask})
    write_masks(model_dir / "masks.json", generation, out)
    print(f"  {model_dir.name}: {len(out)} conversations, masks agree")
    return len(out)


def write_masks(path, generation, conversations):
    # One conversation per line, so a regenerated file diffs readably.
    lines = [json.dumps(c, ensure_ascii=False, separators=(",", ":")) for c in conversations]
    head = {
        "transformers": transformers.__version__,
        "tokenizer": "../tokenizer.json",
        "generation_template": generation,
    }
    text = json.dumps(head, ensure_ascii=False, indent=1)[:-2]
    text += ',\n "conversations": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n"
    json.loads(text)
    path.write_text(text, encoding="utf-8")


def generate(fixtures, tokenizer=None, only=None):
    print(f"chat masks -> {fixtures}")
    tokenizer_json = fixtures / "tokenizer.json"
    if tokenizer is None:
        make_tokenizer(tokenizer_json)
    elif Path(tokenizer).resolve() != tokenizer_json.resolve():
        shutil.copy(tokenizer, tokenizer_json)
    dirs = sorted(p.parent for p in fixtures.glob("*/tokenizer_config.json"))
    if only:
        dirs = [d for d in dirs if d.name in only]
    total = sum(generate_one(d, tokenizer_json) for d in dirs)
    print(f"  {total} conversations in {len(dirs)} templates")


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fixtures", type=Path, default=REPO / "tests/fixtures/chat")
    p.add_argument("--tokenizer", type=Path, help="a tokenizer.json to use instead of the generated one")
    p.add_argument("--only", action="append", help="this template directory only (repeatable)")
    args = p.parse_args(argv)
    generate(args.fixtures, args.tokenizer, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
