"""MkDocs hooks: README.md is the home page, and the guide pages link repository files.

* ``on_files``: the repository files that README.md or a page under ``docs/`` links to (plots,
  result tables, source files) are served at their paths in the repository, so the links and
  images work on the site as on GitHub. A link to a file that does not exist stays broken, and
  ``--strict`` fails on it.
* ``on_page_markdown``: a page's links to such files (``../experiments/results/x.png`` from
  ``docs/results.md``, the path that works on GitHub) are rewritten to where the site serves
  them.
* A Markdown tree processor rewrites README links into ``docs/`` (``docs/reference/replay.md``)
  to the page they name. README.md is only included in pages at the top of ``docs/``, where
  its other relative links already work.
* ``<!-- README: Heading text -->`` on a line of a page is replaced by that section of
  README.md (the heading, its text and subsections, up to the next heading of its level);
  a heading that README.md does not have stops the build.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from markdown import Extension
from markdown.treeprocessors import Treeprocessor
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
LINK = re.compile(r"\]\(([^)\s#]+)")
SECTION = re.compile(r"^<!-- README: (.+?) -->$", re.M)
HEADING = re.compile(r"^(#{1,6}) (.+?)\s*$")


def linked_files(markdown: Path, found: set, docs_dir: Path) -> set:
    """Repository files that ``markdown`` links to, following linked Markdown files."""
    for target in LINK.findall(markdown.read_text()):
        if "://" in target or target.startswith(("/", "mailto:")):
            continue
        path = Path(os.path.normpath(markdown.parent / target))
        if (
            path.is_file()
            and ROOT in path.parents
            and docs_dir not in path.parents
            and path not in found
        ):
            found.add(path)
            if path.suffix == ".md":
                linked_files(path, found, docs_dir)
    return found


def on_files(files, config):
    docs_dir = Path(os.path.normpath(config["docs_dir"]))
    found = linked_files(README, set(), docs_dir)
    for page in sorted(docs_dir.rglob("*.md")):
        linked_files(page, found, docs_dir)
    for path in sorted(found):
        uri = path.relative_to(ROOT).as_posix()
        if files.get_file_from_path(uri) is None:
            files.append(File(uri, str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files


def readme_section(heading: str) -> str:
    lines = README.read_text().splitlines()
    in_code = False
    start = level = None
    for i, line in enumerate(lines):
        if line.startswith("```"):
            in_code = not in_code
        match = None if in_code else HEADING.match(line)
        if match is None:
            continue
        if start is None and match[2] == heading:
            start, level = i, len(match[1])
        elif start is not None and len(match[1]) <= level:
            return "\n".join(lines[start:i])
    if start is None:
        raise PluginError(f"README.md has no heading {heading!r}")
    return "\n".join(lines[start:])


def _site_link(match, page, docs_dir: Path) -> str:
    """A page's link to a repository file outside ``docs/`` -> the path the site serves it at,
    relative to the page."""
    target = match[1]
    if "://" in target or target.startswith(("/", "mailto:")):
        return match[0]
    path = Path(os.path.normpath(Path(page.file.abs_src_path).parent / target))
    if not (path.is_file() and ROOT in path.parents and docs_dir not in path.parents):
        return match[0]
    uri = path.relative_to(ROOT).as_posix()
    return "](" + os.path.relpath(uri, os.path.dirname(page.file.src_uri) or ".")


def on_page_markdown(markdown, page, config, files):
    markdown = SECTION.sub(lambda m: readme_section(m[1]), markdown)
    docs_dir = Path(os.path.normpath(config["docs_dir"]))
    return LINK.sub(lambda m: _site_link(m, page, docs_dir), markdown)


class _DocsLinks(Treeprocessor):
    """README's links into docs/ (relative to the repository root) -> links between pages."""

    def run(self, root):
        for element in root.iter():
            for attribute in ("href", "src"):
                value = element.get(attribute)
                if value and value.startswith("docs/"):
                    element.set(attribute, value.removeprefix("docs/"))


class _DocsLinksExtension(Extension):
    def extendMarkdown(self, md):
        # Before mkdocs' own link processor (priority 0), which checks the targets.
        md.treeprocessors.register(_DocsLinks(md), "memjax_docs_links", 1)


def on_config(config):
    config.markdown_extensions.append(_DocsLinksExtension())
    return config
