"""Helpers shared by the fixture generators and the export checks."""

import json

import numpy
import peft
import safetensors
import tokenizers
import torch
import transformers


def versions():
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "peft": peft.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": numpy.__version__,
    }


def write_json(path, value):
    # Fixed formatting so regenerating gives identical bytes.
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
