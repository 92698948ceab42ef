#!/usr/bin/env python3
"""Checks that the README and the manual in docs/ say nothing the tree contradicts.

  check-docs.py [SOURCE_DIR]      (default: the repository this script is in)

- every `make <target>` written in README.md or docs/*.md names a target the Makefile has
  (a rule, or a pattern such as test-% of the ARM targets);
- every relative link, [text](path) or ![alt](path), resolves to a file or folder of the tree,
  and a link's #anchor to a heading of the Markdown page it points at;
- every path of the source tree a page shows as code (`runtime/...`, `scripts/...`, globs such as
  `bench/gather_*.cpp` included) exists, so a page cannot name a file that moved.

Commands and paths are looked for in code only (`inline` and fenced blocks), not in prose.

Prints each problem as FILE:LINE: message and exits 1 if there is any; CTest runs it as
embag_docs (make test). It reads only the source tree: no build, no network.
"""
import glob
import os
import re
import sys

MAKE_WORD = re.compile(r"\bmake ((?:[A-Z_]+=\S+ )*)([a-z][a-z0-9-]*)")
INLINE_CODE = re.compile(r"`([^`]+)`")
# Source paths: the tree's own top-level folders (build outputs, build*/, are not checked).
SOURCE_PATH = re.compile(
    r"(?<![\w./-])((?:bench|cmake|docs|examples|fuzz|generators|include|python|runtime|scripts|"
    r"tests|tools)/[\w./*-]*[\w*/])")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*```")


def makefile_targets(root):
    """The Makefile's rule names (the static ones, and those $(addprefix ...) and $(foreach ...)
    spell), expanded for the cross architectures."""
    text = open(os.path.join(root, "Makefile"), encoding="utf-8").read()
    targets = set()
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9_%./ -]+?)\s*:(?!=)", line)
        if m and not line.startswith("\t"):
            targets.update(m.group(1).split())
    archs = re.search(r"^CROSS_ARCHS\s*:=\s*(.*)$", text, re.M)
    for arch in (archs.group(1).split() if archs else []):
        for prefix in ("deps", "configure", "build", "test"):
            targets.add(f"{prefix}-{arch}")
    return {t for t in targets if "%" not in t and "$" not in t}


def anchors(path):
    """GitHub's anchors for the headings of a Markdown file."""
    found = set()
    in_fence = False
    for line in open(path, encoding="utf-8"):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        m = None if in_fence else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = m.group(1).strip().lower()
            slug = re.sub(r"[^\w\- ]", "", slug)
            found.add(slug.replace(" ", "-"))
    return found


def check(root):
    pages = [os.path.join(root, "README.md")]
    docs = os.path.join(root, "docs")
    if os.path.isdir(docs):
        pages += sorted(os.path.join(docs, f) for f in os.listdir(docs) if f.endswith(".md"))
    targets = makefile_targets(root)
    problems = []
    for page in pages:
        rel = os.path.relpath(page, root)
        in_fence = False
        for number, line in enumerate(open(page, encoding="utf-8"), start=1):
            if FENCE.match(line):
                in_fence = not in_fence
                continue
            code = [line] if in_fence else INLINE_CODE.findall(line)
            for snippet in code:
                for m in MAKE_WORD.finditer(snippet):
                    if m.group(2) not in targets:
                        problems.append(f"{rel}:{number}: 'make {m.group(2)}': the Makefile has no such target")
                for m in SOURCE_PATH.finditer(snippet):
                    placeholder = snippet[m.end():m.end() + 1] == "<"  # tests/golden/<case>
                    if not placeholder and not glob.glob(os.path.join(root, m.group(1))):
                        problems.append(f"{rel}:{number}: '{m.group(1)}' is not in the tree")
            if in_fence:
                continue
            for m in LINK.finditer(line):
                link = m.group(1)
                if re.match(r"^[a-z][a-z0-9+.-]*:", link) or link.startswith("//"):
                    continue  # https:, mailto: ...
                path, _, anchor = link.partition("#")
                target = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
                if not os.path.exists(target):
                    problems.append(f"{rel}:{number}: link '{link}': {os.path.relpath(target, root)} does not exist")
                elif anchor and target.endswith(".md") and anchor not in anchors(target):
                    problems.append(f"{rel}:{number}: link '{link}': no heading '#{anchor}' in {os.path.relpath(target, root)}")
    return pages, problems


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                           os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    pages, problems = check(root)
    for problem in problems:
        print(problem)
    if problems:
        print(f"check-docs: {len(problems)} problem(s) in {len(pages)} page(s)")
        return 1
    print(f"check-docs: {len(pages)} page(s): every make target exists, every relative link resolves")
    return 0


if __name__ == "__main__":
    sys.exit(main())
