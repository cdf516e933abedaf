"""The API reference of the documentation site (docs/api/, built by `make docs`)
documents every public name, so that it stays complete as the API grows.
(Whether each page renders, with no broken link or reference, is checked by
`mkdocs build --strict` in `make test`.)"""

import pathlib
import re

import jaxdiffeq
import jaxdiffeq.problems  # noqa: F401  (documented as a whole in docs/api/problems.md)

API = pathlib.Path(__file__).resolve().parent.parent / "docs" / "api"
_DIRECTIVE = re.compile(r"^::: jaxdiffeq\.([A-Za-z_][A-Za-z0-9_.]*)\s*$", re.MULTILINE)


def _documented() -> list[str]:
    names = []
    for page in sorted(API.glob("*.md")):
        names += _DIRECTIVE.findall(page.read_text())
    return names


def test_every_public_name_is_in_the_reference():
    public = {name for name in dir(jaxdiffeq) if not name.startswith("_")}
    public -= {"problems"}  # the submodule, documented as a whole
    missing = public - set(_documented())
    assert not missing, f"not in docs/api/: {sorted(missing)}"


def test_the_reference_documents_only_real_names_once():
    names = _documented()
    assert len(names) == len(set(names)), "a name is documented twice"
    for name in names:
        obj = jaxdiffeq
        for part in name.split("."):
            obj = getattr(obj, part)
