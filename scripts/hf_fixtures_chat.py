"""What transformers' apply_chat_template renders for real models' chat templates.

Inputs are the committed tests/fixtures/chat/<model>/tokenizer_config.json files
(real templates, provenance in tests/fixtures/chat/README.md); this writes
cases.json next to each, then hf_fixtures_masks writes masks.json (the
assistant-token masks). The tokenizer is fucina's own corpus tokenizer.json
wrapped with the config, loaded the way transformers loads any model directory,
so only the template and the special tokens come from the real model.
"""

import json
import shutil
import tempfile
from pathlib import Path

from transformers import PreTrainedTokenizerFast

from hf_fixtures_common import write_json

TOKENIZER_JSON = "crates/fucina-data/corpus/tokenizer.json"

SYSTEM = {"role": "system", "content": "You are a terse assistant."}
U1 = {"role": "user", "content": "What is the capital of France?"}
A1 = {"role": "assistant", "content": "Paris."}
U2 = {"role": "user", "content": "And of Italy?"}
A2 = {"role": "assistant", "content": "Rome."}
# Templates differ in whether they trim; the surrounding spaces/newlines show it.
NON_ASCII_U = {"role": "user", "content": "  Grüße aus Köln: ä ö ü, 5 €, 日本語\n\n"}
NON_ASCII_A = {"role": "assistant", "content": "\n Gern: ä, €, 日本 \n"}

CASES = [
    ([U1], False),
    ([U1], True),
    ([U1, A1], False),
    ([U1, A1, U2], True),
    ([U1, A1, U2, A2], False),
    ([SYSTEM, U1], True),
    ([SYSTEM, U1, A1, U2, A2], False),
    ([NON_ASCII_U], True),
    ([SYSTEM, NON_ASCII_U, NON_ASCII_A], False),
    ([{"role": "user", "content": ""}], True),
]
# Orders some templates reject (raise_exception); others render them.
IRREGULAR = [
    ([U1, U2], False),
    ([A1, U1], True),
    ([U1, SYSTEM, A1], False),
]


def load_tokenizer(model_dir, repo):
    """The config next to a tokenizer.json, loaded as a model directory."""
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(repo / TOKENIZER_JSON, Path(tmp) / "tokenizer.json")
        shutil.copy(model_dir / "tokenizer_config.json", Path(tmp) / "tokenizer_config.json")
        tok = PreTrainedTokenizerFast.from_pretrained(tmp)
    config = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        got = getattr(tok, key)
        if got != config.get(key):
            raise SystemExit(f"{model_dir}: tokenizer {key} is {got!r}, config says {config.get(key)!r}")
    if tok.chat_template != config["chat_template"]:
        raise SystemExit(f"{model_dir}: tokenizer did not pick up chat_template")
    return tok


def render(tok, messages, add_generation_prompt):
    try:
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as e:  # jinja2 TemplateError from raise_exception
        if "TemplateError" not in type(e).__name__:
            raise
        return None, str(e)
    if not isinstance(text, str):
        raise SystemExit(f"apply_chat_template returned {type(text).__name__}, not a string")
    return text, None


def generate_one(model_dir, repo):
    tok = load_tokenizer(model_dir, repo)
    cases, errors = [], 0
    for i, (messages, gen) in enumerate(CASES + IRREGULAR):
        text, err = render(tok, messages, gen)
        case = {"messages": messages, "add_generation_prompt": gen}
        if err is None:
            case["rendered"] = text
        elif i < len(CASES):
            raise SystemExit(f"{model_dir}: a regular conversation raised {err!r}: {messages}")
        else:
            case["error"] = True
            errors += 1
        cases.append(case)
    write_json(model_dir / "cases.json", cases)
    print(f"  {model_dir.name}: {len(cases)} cases, {errors} raise")
    return errors


def generate(out_root, repo):
    print(f"chat templates -> {out_root}")
    dirs = sorted(p.parent for p in out_root.glob("*/tokenizer_config.json"))
    if len(dirs) < 3:
        raise SystemExit(f"{out_root}: expected at least 3 <model>/tokenizer_config.json, found {len(dirs)}")
    raising = sum(generate_one(d, repo) > 0 for d in dirs)
    if raising == 0:
        raise SystemExit("no template raised on an irregular conversation; the error path is untested")
    # The assistant masks of the same templates (masks.json beside cases.json).
    import hf_fixtures_masks

    hf_fixtures_masks.generate(out_root)
