"""The documentation does not point nowhere: every relative link in README.md
and docs/ names a file that exists (and, with a #fragment, a heading of that
file), and every command of README.md's first code block is a make target."""
import re
import subprocess
import unicodedata

import pytest

from conftest import ROOT

pytestmark = pytest.mark.backend_independent

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces
    to hyphens."""
    text = heading.strip().lower()
    text = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LN")
    return text.replace(" ", "-")


def anchors(path):
    found = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            s = slug(re.sub(r"[`*]", "", m.group(1)))
            n = 1
            base = s
            while s in found:       # GitHub numbers repeated headings
                s = "%s-%d" % (base, n)
                n += 1
            found.add(s)
    return found


def links(path):
    text = FENCE.sub("", path.read_text())
    for m in LINK.finditer(text):
        target = m.group(1) or m.group(2)
        if not re.match(r"[a-z]+:", target):    # http:, https:, mailto:
            yield target


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc):
    bad = []
    for target in links(doc):
        file_part, _, fragment = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            bad.append("%s: no such file" % target)
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            bad.append("%s: no such heading in %s" % (target, dest.name))
    assert not bad, "%s:\n  %s" % (doc.name, "\n  ".join(bad))


def test_links_are_found_and_a_broken_one_is_caught(tmp_path):
    """The checker itself: it sees README's links, and a made-up target fails."""
    assert len(list(links(ROOT / "README.md"))) >= 10
    doc = tmp_path / "x.md"
    doc.write_text("# Title\n[ok](#title) [bad](#nowhere) [gone](missing.md)\n")
    targets = list(links(doc))
    assert targets == ["#title", "#nowhere", "missing.md"]
    assert "title" in anchors(doc) and "nowhere" not in anchors(doc)


def make_targets():
    out = subprocess.run(["make", "-C", str(ROOT), "-pRrq", "-f", "Makefile", ":"],
                         capture_output=True, text=True).stdout
    return {m.group(1) for m in re.finditer(r"^([a-zA-Z0-9][\w.-]*):", out, re.M)}


def test_first_block_commands_are_make_targets():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"^```sh\n(.*?)^```", readme, re.S | re.M).group(1)
    commands = [l.split("#")[0].split() for l in block.splitlines() if l.strip() and not
                l.lstrip().startswith("#")]
    assert commands, block
    targets = make_targets()
    assert {"run", "test"} <= targets, sorted(targets)[:20]
    for words in commands:
        assert words[0] == "make", "not a make command: %s" % " ".join(words)
        for target in words[1:]:
            assert target in targets, "make %s: no such target" % target
