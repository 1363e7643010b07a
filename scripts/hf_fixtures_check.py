"""Run transformers/peft on checkpoints and adapters fucina exported.

Both checks load only through the public entry points a user would use
(AutoModelForCausalLM without trust_remote_code, PeftModel.from_pretrained), so
a pass means the export works outside fucina, not just that it round-trips.
"""

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def fail(msg):
    raise SystemExit(f"error: {msg}")


def read_reference(path):
    if not path.is_file():
        fail(f"--tokens-from {path}: no such file")
    try:
        ref = load_file(str(path))
    except (SafetensorError, OSError) as e:
        fail(f"--tokens-from {path}: not a readable safetensors file ({e})")
    tokens = ref.get("tokens")
    if tokens is None or tokens.dim() != 2 or tokens.dtype != torch.int64:
        fail(f"--tokens-from {path}: needs an int64 [batch, seq] tensor `tokens`")
    return tokens, ref.get("logits"), ref.get("loss")


def need_dir(path, flag, marker):
    if not path.is_dir():
        fail(f"{flag} {path}: not a directory")
    if not (path / marker).is_file():
        fail(f"{flag} {path}: no {marker} in it")


def load_model(path, flag):
    need_dir(path, flag, "config.json")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch.float32, trust_remote_code=False, attn_implementation="eager"
        )
    except Exception as e:
        fail(f"{flag} {path}: transformers could not load it: {type(e).__name__}: {e}")
    return model.eval()


def logits_of(model, tokens, what):
    vocab = model.config.vocab_size
    if int(tokens.max()) >= vocab:
        fail(f"{what}: token id {int(tokens.max())} is outside the model's vocab_size {vocab}")
    with torch.no_grad():
        out = model(tokens, labels=tokens)
    return out.logits.float().contiguous(), out.loss.float().reshape(1)


def compare(name, got, want):
    """Max abs difference, and that over max |want| (the scale the tolerance means)."""
    if got.shape != want.shape:
        fail(f"{name}: shape {tuple(got.shape)} differs from reference {tuple(want.shape)}")
    abs_diff = (got - want).abs().max().item()
    rel = abs_diff / max(want.abs().max().item(), 1e-12)
    print(f"{name}: max abs diff {abs_diff:.3e}, relative to max |reference| {rel:.3e}")
    return rel


def describe_tokenizer(path):
    present = [f for f in TOKENIZER_FILES if (path / f).is_file()]
    if not present:
        print(f"tokenizer: none in {path} (no {', '.join(TOKENIZER_FILES)})")
        return None
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except Exception as e:
        fail(f"--exported {path}: AutoTokenizer could not load {present}: {type(e).__name__}: {e}")
    print(
        f"tokenizer: {type(tok).__name__} from {present}, {len(tok)} tokens, "
        f"bos={tok.bos_token!r} eos={tok.eos_token!r} pad={tok.pad_token!r}, "
        f"chat_template={'yes' if tok.chat_template else 'no'}"
    )
    sample = "Grüße, 5 € — 日本"
    ids = tok(sample, add_special_tokens=False)["input_ids"]
    print(f"tokenizer: {sample!r} -> {ids} -> {tok.decode(ids)!r}")
    if tok.chat_template:
        text = tok.apply_chat_template(
            [{"role": "user", "content": "Hello"}], tokenize=False, add_generation_prompt=True
        )
        print(f"tokenizer: chat template renders {text!r}")
    return len(tok)


def check_export(exported, tokens_from, out, tol):
    tokens, ref_logits, ref_loss = read_reference(tokens_from)
    model = load_model(exported, "--exported")
    cfg = json.loads((exported / "config.json").read_text(encoding="utf-8"))
    disk = cfg.get("dtype", cfg.get("torch_dtype"))
    print(f"loaded {type(model).__name__} from {exported} ({model.config.model_type}, config dtype {disk})")
    n_tok = describe_tokenizer(exported)
    if n_tok is not None and n_tok > model.config.vocab_size:
        print(f"warning: tokenizer has {n_tok} tokens but vocab_size is {model.config.vocab_size}")
    logits, loss = logits_of(model, tokens, f"--exported {exported}")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({"logits": logits, "loss": loss}, str(out))
    print(f"wrote logits {tuple(logits.shape)} and loss {loss.item():.6f} to {out}")
    if ref_logits is None:
        print(f"{tokens_from} has no `logits`; nothing to compare")
        return 0
    rel = compare("logits", logits, ref_logits)
    if ref_loss is not None:
        compare("loss", loss, ref_loss)
    if rel > tol:
        print(f"FAIL: relative logits difference {rel:.3e} > --tol {tol:g}")
        return 1
    print(f"OK (--tol {tol:g})")
    return 0


def describe_adapter(adapter):
    need_dir(adapter, "--adapter", "adapter_config.json")
    try:
        cfg = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        fail(f"--adapter {adapter}/adapter_config.json: {e}")
    keys = ("peft_type", "r", "lora_alpha", "use_rslora", "target_modules", "base_model_name_or_path")
    print("adapter: " + ", ".join(f"{k}={cfg.get(k)!r}" for k in keys))


def check_peft(base, adapter, tokens_from, out, tol):
    from peft import PeftModel

    tokens, _, _ = read_reference(tokens_from)
    describe_adapter(adapter)
    model = load_model(base, "--base")
    base_logits, _ = logits_of(model, tokens, f"--base {base}")
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
    except Exception as e:
        fail(f"--adapter {adapter}: peft could not load it onto {base}: {type(e).__name__}: {e}")
    peft_model.eval()
    logits, loss = logits_of(peft_model, tokens, f"--adapter {adapter}")
    effect = (logits - base_logits).abs().max().item()
    print(f"adapter changes logits by up to {effect:.3e}")
    if effect == 0.0:
        print("warning: the adapter has no effect (all lora_B zero?); the check below proves little")
    merged = peft_model.merge_and_unload()
    merged_logits, _ = logits_of(merged, tokens, "merged model")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({"logits": logits, "loss": loss, "merged_logits": merged_logits, "base_logits": base_logits}, str(out))
    print(f"wrote logits {tuple(logits.shape)} (and merged_logits, base_logits) to {out}")
    rel = compare("merged vs adapter logits", merged_logits, logits)
    if rel > tol:
        print(f"FAIL: merge_and_unload changed the logits by {rel:.3e} > --tol {tol:g}")
        return 1
    print(f"OK (--tol {tol:g})")
    return 0
