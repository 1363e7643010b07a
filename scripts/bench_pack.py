"""Conversations for scripts/bench-pack.sh: `bench_pack.py CORPUS OUT N SEED` writes N JSONL
conversations built from the built-in corpus's sentences, with lengths drawn (fixed seed) as in
public instruction-tuning sets: 1 turn in 60 %, 2 in 25 %, 3 in 10 %, 4 in 5 %; user messages of
8-60 words (uniform); replies log-normal, median 120 words, σ 0.9 (a few past 1,000 words); a
system prompt in a third of them. Only lengths matter for packing, not what the words say.
"""

import json
import math
import random
import sys
from pathlib import Path


def main(corpus: str, out: str, n: int, seed: int) -> None:
    words = []
    for path in sorted(Path(corpus).glob("*.txt")):
        words.extend(path.read_text(encoding="utf-8").split())
    rng = random.Random(seed)

    def text(count: int) -> str:
        at = rng.randrange(len(words) - count - 1)
        return " ".join(words[at : at + count])

    with open(out, "w", encoding="utf-8") as f:
        for _ in range(n):
            turns = rng.choices([1, 2, 3, 4], weights=[60, 25, 10, 5])[0]
            messages = []
            if rng.random() < 1 / 3:
                messages.append({"role": "system", "content": text(rng.randint(5, 30))})
            for _ in range(turns):
                messages.append({"role": "user", "content": text(rng.randint(8, 60))})
                reply = max(1, min(4000, round(120 * math.exp(0.9 * rng.gauss(0, 1)))))
                messages.append({"role": "assistant", "content": text(reply)})
            f.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
