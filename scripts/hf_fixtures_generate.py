"""transformers' greedy chat generation on the llama-gqa fixture model, the reference for
`fucina generate --chat` (crates/fucina-train/tests/chat_generate.rs).

The model directory: the llama-gqa weights, Qwen2-Instruct's tokenizer_config.json (its chat
template) and a word-level tokenizer.json over the words below (as tests/finetune.rs's). Run in
the pinned venv:
  HF_HUB_OFFLINE=1 .venv-fixtures/bin/python scripts/hf_fixtures_generate.py
writes tests/fixtures/chat-generate/{tokenizer.json,greedy.json}.
"""
import json
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

REPO = Path(__file__).resolve().parent.parent
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
WORDS = ("system user assistant You are a helpful . ciao buongiorno come stai bene grazie e tu "
         "la forgia arde il mare calmo ? !").split(" ")
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant ."},
    {"role": "user", "content": "ciao ! come stai ?"},
]
NEW_TOKENS = 12


def model_dir(d: Path) -> None:
    for f in (REPO / "tests/fixtures/hf/llama-gqa").iterdir():
        shutil.copy(f, d / f.name)
    shutil.copy(REPO / "tests/fixtures/chat/qwen2-7b-instruct/tokenizer_config.json",
                d / "tokenizer_config.json")
    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    added = [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, c in enumerate(SPECIALS)]
    tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
           "normalizer": None, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None,
           "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
           "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<|endoftext|>"}}
    (d / "tokenizer.json").write_text(json.dumps(tok))


def main() -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        model_dir(d)
        shutil.copy(d / "tokenizer.json", REPO / "tests/fixtures/chat-generate/tokenizer.json")
        config = json.loads((d / "tokenizer_config.json").read_text())
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(d / "tokenizer.json"))
        tokenizer.chat_template = config["chat_template"]
        ids = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True,
                                            return_dict=False)
        if isinstance(ids, dict):
            ids = ids["input_ids"]
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                 eos_token_id=[stop, 0], pad_token_id=0)
            generated = out[0, len(ids):].tolist()
            # How far each greedy choice is from the runner-up: a margin far above the 1e-6
            # by which fucina's logits may differ makes the comparison meaningful.
            logits = model(out[:, :-1]).logits[0, len(ids) - 1:]
            top2 = logits.topk(2, dim=-1).values
            margin = float((top2[:, 0] - top2[:, 1]).min())
    text = tokenizer.decode([t for t in generated if t not in (stop, 0)], skip_special_tokens=True)
    fixture = {"messages": MESSAGES, "prompt_ids": ids, "generated_ids": generated, "text": text,
               "min_logit_margin": margin}
    out = REPO / "tests/fixtures/chat-generate"
    out.mkdir(exist_ok=True)
    path = out / "greedy.json"
    path.write_text(json.dumps(fixture, indent=1) + "\n")
    print(path, fixture)


if __name__ == "__main__":
    main()
