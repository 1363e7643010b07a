"""tests/fixtures/hf/*/packed.safetensors: what transformers computes for documents packed in
one row with `position_ids` restarting at 0 for each, no attention mask and no cache — its packed-sequence
path (masking_utils.find_packed_sequence_indices), which turns those positions into a
block-diagonal causal mask in eager and sdpa attention. Run through
`bash scripts/hf-fixtures.sh packed`; reads the fixture models already on disk.

Each file holds `tokens` [1, 24] (the first row of reference.safetensors), `position_ids` [1, 24]
for documents of 5, 1, 9 and 9 tokens, `logits` [1, 23, vocab] and `loss` (the mean over the
targets inside a document). Before writing, every document is also run alone and its logits
must equal the packed row's: a transformers that ignored the packing would fail here.
"""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from hf_fixtures_models import load_f32

LENGTHS = [5, 1, 9, 9]


def generate_one(out):
    tokens = load_file(str(out / "reference.safetensors"))["tokens"][:1]
    assert tokens.shape[1] == sum(LENGTHS), tokens.shape
    positions = torch.cat([torch.arange(n) for n in LENGTHS]).reshape(1, -1)
    model = load_f32(out)
    with torch.no_grad():
        # No cache: transformers looks for packed positions only when there is none.
        logits = model(tokens, position_ids=positions, use_cache=False).logits.float()
        alone, at = [], 0
        for n in LENGTHS:
            alone.append(model(tokens[:, at : at + n]).logits.float())
            at += n
    alone = torch.cat(alone, dim=1)
    diff = (logits - alone).abs().max().item() / alone.abs().max().item()
    if diff > 1e-5:
        raise SystemExit(f"{out.name}: packed logits differ from each document alone by {diff:e}")
    # Targets inside a document only: a document's last token predicts nothing.
    last = torch.cumsum(torch.tensor(LENGTHS), 0) - 1
    keep = torch.ones(tokens.shape[1] - 1, dtype=torch.bool)
    keep[last[:-1]] = False
    nll = torch.nn.functional.cross_entropy(logits[0, :-1], tokens[0, 1:], reduction="none")
    loss = nll[keep].mean().reshape(1)
    save_file(
        {
            "tokens": tokens.contiguous(),
            "position_ids": positions.contiguous(),
            "logits": logits.contiguous(),
            "loss": loss.contiguous(),
        },
        str(out / "packed.safetensors"),
        metadata={"producer": "scripts/hf_fixtures_packed.py", "lengths": json.dumps(LENGTHS)},
    )
    print(f"  {out.name}: packed vs alone {diff:.1e}, loss {loss.item():.6f}")


def generate(root: Path):
    for out in sorted(p for p in root.iterdir() if (p / "reference.safetensors").is_file()):
        generate_one(out)
