"""Documentation references: every docs page and README path that the docs, the package, the notebooks, tools and
params name exists, every relative Markdown link resolves, and the README stays a front door (at most 300 lines).

Fast and import-free (re, json and pathlib only): it reads text files, it never imports the package.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())

# Prose paths, relative to the project root. Not preceded by a path or word character, so the "docs/" inside an URL
# ("pytorch.org/docs/stable") and the "README.md" inside "docs/runs/README.md" are not read as root paths.
PATH_PATTERNS = (
    re.compile(r"(?<![\w./:-])docs/[A-Za-z0-9_./-]+"),
    re.compile(r"(?<![\w./:-])README[A-Za-z0-9_.-]*\.md"),
)
TRAILING = ".,;:)`'\""
# Markdown links and images: [text](target) or [text](target "title"); resolved relative to the page's folder.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^ {0,3}(```|~~~)")
README_MAX_LINES = 300


def scanned_files() -> list[Path]:
    files = [ROOT / "README.md"]
    files += sorted((ROOT / "docs").rglob("*.md"))
    files += sorted((ROOT / "ffdv_utils").rglob("*.py"))
    files += sorted((ROOT / "notebooks").glob("*.ipynb"))
    files += sorted((ROOT / "tools").glob("*.py"))
    files += sorted((ROOT / "params").glob("*.yaml"))
    return [f for f in files if f.is_file()]


def text_of(path: Path) -> str:
    raw = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".ipynb":
        try:
            cells = json.loads(raw).get("cells", [])
        except json.JSONDecodeError:
            return raw
        parts = []
        for cell in cells:
            src = cell.get("source", "")
            parts.append("".join(src) if isinstance(src, list) else str(src))
        return "\n".join(parts)
    return raw


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def strip_trailing(ref: str) -> str:
    return ref.rstrip(TRAILING)


def prose_refs(text: str) -> set[str]:
    refs = set()
    for pattern in PATH_PATTERNS:
        for m in pattern.finditer(text):
            ref = strip_trailing(m.group(0))
            if ref:
                refs.add(ref)
    return refs


def link_targets(text: str) -> list[str]:
    out = []
    for m in LINK.finditer(text):
        target = m.group(1)
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("//"):
            continue  # http:, https:, mailto: ...
        out.append(target)
    return out


def missing_references() -> list[str]:
    missing = []
    for f in scanned_files():
        text = text_of(f)
        for ref in sorted(prose_refs(text)):
            if not (ROOT / ref).exists():
                missing.append(f"{ref}  (named in {rel(f)})")
        if f.suffix == ".md":
            for target in link_targets(text):
                path = target.split("#", 1)[0].split("?", 1)[0]
                if path and not (f.parent / path).exists():
                    missing.append(f"{target}  (Markdown link in {rel(f)}, resolved from {rel(f.parent) or '.'}/)")
    return missing


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (not - or _), spaces to hyphens."""
    heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    heading = heading.strip().lower()
    heading = re.sub(r"[^\w\- ]", "", heading)
    return heading.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    in_fence = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        m = None if in_fence else HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_named_docs_paths_exist():
    missing = missing_references()
    assert not missing, "paths named but missing (relative to the project root unless a link says otherwise):\n  " + \
        "\n  ".join(missing)


def test_markdown_anchors_exist():
    broken = []
    for f in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for target in link_targets(f.read_text(encoding="utf-8")):
            if "#" not in target:
                continue
            path, anchor = target.split("#", 1)
            page = (f.parent / path) if path else f
            if page.suffix != ".md" or not page.is_file():
                continue  # a missing page is the other test's finding
            if anchor not in anchors(page):
                broken.append(f"{target}  (in {rel(f)}: no heading with anchor #{anchor} in {rel(page)})")
    assert not broken, "links to headings that do not exist:\n  " + "\n  ".join(broken)


def test_readme_links_every_docs_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = {(ROOT / t.split("#", 1)[0]).resolve() for t in link_targets(readme) if t.split("#", 1)[0]}
    pages = sorted(p for p in (ROOT / "docs").glob("*.md"))
    unlinked = [rel(p) for p in pages if p.resolve() not in linked]
    assert not unlinked, f"docs pages the README's Documentation list does not link: {unlinked}"


def test_readme_is_short():
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES}): move detail into docs/"


@pytest.mark.parametrize("text, expected", [
    ("see docs/features.md.", {"docs/features.md"}),
    ("[x](docs/features.md#decoding), `docs/runs/best300/`)", {"docs/features.md", "docs/runs/best300/"}),
    ("https://pytorch.org/docs/stable/x.html and docs/runs/README.md", {"docs/runs/README.md"}),
    ("README_training.md, README.md's", {"README_training.md", "README.md"}),
])
def test_reference_patterns(text, expected):
    assert prose_refs(text) == expected


def test_structure_page_lists_every_module():
    """docs/structure.md has a line for every module of the package (``subpackage/module.py``)."""
    text = (ROOT / "docs" / "structure.md").read_text(encoding="utf-8")
    pkg = ROOT / "ffdv_utils"
    modules = [p.relative_to(pkg).as_posix() for p in sorted(pkg.rglob("*.py"))
               if p.name != "__init__.py" and p.parent != pkg]
    missing = [m for m in modules if f"`{m}`" not in text]
    assert not missing, f"docs/structure.md does not list: {', '.join(missing)}"
