"""The README stays a landing page, and every relative link in it and in docs/ leads somewhere."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 300
# [text](target) and ![alt](target), with an optional "title"; text holds no ']' in our pages
LINK = re.compile(r"!?\[[^\]]*\]\(\s*([^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans blanked (option lists such as
    `[--data] (...)` are not links, and a `# comment` in a shell block is not a heading)."""
    lines, in_code = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            in_code = not in_code
            continue
        if not in_code:
            lines.append(re.sub(r"`[^`]*`", "``", line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (word characters, '-' and spaces
    kept), spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a markdown file (a repeated heading gets -1, -2, ... as on GitHub). Code
    spans keep their text here: `w2s synth` in a heading is part of its anchor."""
    found: set[str] = set()
    times: dict[str, int] = {}
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_code = not in_code
        elif not in_code and (m := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)):
            base = slug(m.group(1))
            found.add(base if base not in times else f"{base}-{times[base]}")
            times[base] = times.get(base, 0) + 1
    return found


def relative_links(path: Path) -> list[str]:
    """The link targets of a markdown file that point into the repository (no URL scheme, not a pure #anchor)."""
    targets = [m.group(1) for line in prose_lines(path.read_text(encoding="utf-8")) for m in LINK.finditer(line)]
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t, re.I) and not t.startswith("#")]


def broken_links(path: Path) -> list[str]:
    """Each relative link of `path` whose file is missing, or whose #anchor names no heading of a markdown file."""
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve()
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no heading with that anchor)")
    return broken


def test_readme_is_a_landing_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move long sections to docs/"


def test_every_relative_link_resolves():
    broken = {str(p.relative_to(ROOT)): b for p in pages() if (b := broken_links(p))}
    assert not broken, broken


def test_readme_links_every_docs_page():
    """A page nobody links to is a page nobody finds."""
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in relative_links(ROOT / "README.md")}
    for page in (ROOT / "docs").glob("*.md"):
        inbound = linked | {
            (p.parent / t.partition("#")[0]).resolve() for p in pages() if p != page for t in relative_links(p)
        }
        assert page.resolve() in inbound, f"{page.relative_to(ROOT)} is linked from no page"


def test_the_checker_finds_broken_links(tmp_path):
    """The checks above would pass vacuously if the link pattern matched nothing: a page with one good and
    three bad links, and links in code that are not links."""
    (tmp_path / "other.md").write_text("# A heading: `w2s synth`\n\n## Twice\n\n## Twice\n")
    (tmp_path / "fig.png").write_bytes(b"")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#a-heading-w2s-synth) [ok too](other.md#twice-1) ![figure](fig.png) [web](https://x.org/y)\n"
        "[gone](missing.md) ![gone too](missing.png) [bad anchor](other.md#nowhere) [self](#anything)\n"
        "`[--data](not-a-link)`\n```bash\necho [x](also-not-a-link)\n```\n"
    )
    assert broken_links(page) == [
        "missing.md (no such file)",
        "missing.png (no such file)",
        "other.md#nowhere (no heading with that anchor)",
    ]
    assert len(relative_links(ROOT / "README.md")) >= 10
