"""MkDocs hooks: the site's home page is README.md and its changelog is
CHANGELOG.md, generated at build time so that the repository keeps one copy of
each. Links in them that point into docs/ are rewritten to the site's pages."""

import pathlib
import re

from mkdocs.structure.files import File, Files

_ROOT = pathlib.Path(__file__).resolve().parent.parent
_GENERATED = {"index.md": "README.md", "changelog.md": "CHANGELOG.md"}


def _site_links(text: str) -> str:
    text = re.sub(r"\]\(docs/", "](", text)
    return re.sub(r"\]\(CHANGELOG\.md\)", "](changelog.md)", text)


def on_files(files: Files, config) -> Files:
    for page, source in _GENERATED.items():
        content = _site_links((_ROOT / source).read_text())
        files.append(File.generated(config, page, content=content))
    return files
