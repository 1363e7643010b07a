"""Writes the parquet fixtures of crates/fucina-data/tests/formats.rs with pyarrow, as
Hugging Face datasets write them, and the same documents as JSONL for comparison.

    python3 -m venv /tmp/pa && /tmp/pa/bin/pip install pyarrow
    /tmp/pa/bin/python scripts/make_parquet_fixture.py crates/fucina-data/tests/fixtures

Writes hf_snappy.parquet (string column, data pages v1), hf_zstd.parquet (large_string,
data pages v2), each of 3 row groups with an int64 `id` and a `url` column beside `text`,
nulls and empty strings among the texts; and hf_docs.jsonl, the non-empty texts in order:
what fucina's parquet reader must yield.
"""

import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SENTENCES = [
    "Der Bär läuft über die Brücke, während die Bäume grün sind.",
    "Zażółć gęślą jaźń. Łódź leży w Polsce.",
    "Η γρήγορη καφέ αλεπού πηδά πάνω από τον τεμπέλη σκύλο.",
    "Emoji and CJK: 🦀 日本語 テキスト",
    "Blåbærsyltetøy på brødskiva, sa Øystein.\nA second line.\n\nA paragraph after a blank line.",
    "  leading spaces and a trailing newline\n",
]


def texts():
    out = []
    for i in range(60):
        if i % 11 == 5:
            out.append(None)
        elif i % 13 == 7:
            out.append("")
        else:
            # Repeats make pyarrow use a dictionary page, as it does on real corpora.
            out.append(f"{SENTENCES[i % len(SENTENCES)]} #{i % 20}")
    return out


def main(out_dir: Path):
    out_dir.mkdir(parents=True, exist_ok=True)
    docs = texts()
    for name, string_type, codec, page_version in [
        ("hf_snappy.parquet", pa.string(), "snappy", "1.0"),
        ("hf_zstd.parquet", pa.large_string(), "zstd", "2.0"),
    ]:
        table = pa.table(
            {
                "id": pa.array(range(len(docs)), pa.int64()),
                "text": pa.array(docs, string_type),
                "url": pa.array([f"https://example.org/{i}" for i in range(len(docs))]),
            }
        )
        pq.write_table(
            table,
            out_dir / name,
            compression=codec,
            row_group_size=25,
            data_page_version=page_version,
        )
        assert pq.ParquetFile(out_dir / name).num_row_groups == 3
    with open(out_dir / "hf_docs.jsonl", "w", encoding="utf-8") as f:
        for doc in docs:
            if doc:
                f.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
