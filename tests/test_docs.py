"""Every ```python example in README.md and docs/ runs, and the examples/ scripts
run, so the documentation stays true to the code."""

import pathlib
import re
import runpy

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _doc_examples():
    params = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for i, block in enumerate(_BLOCK.findall(path.read_text())):
            params.append(pytest.param(block, id=f"{path.name}-{i}"))
    return params


DOC_EXAMPLES = _doc_examples()


def test_doc_examples_were_found():
    names = {param.id.rsplit("-", 1)[0] for param in DOC_EXAMPLES}
    assert {
        "README.md",
        "choosing-a-solver.md",
        "choosing-an-adjoint.md",
        "migrating-from-diffrax.md",
    } <= names


@pytest.mark.parametrize("code", DOC_EXAMPLES)
def test_doc_example_runs(code):
    exec(compile(code, "<doc>", "exec"), {"__name__": "__doc_example__"})


@pytest.mark.parametrize(
    "script", sorted((ROOT / "examples").glob("*.py")), ids=lambda p: p.name
)
def test_example_script_runs(script, capsys):
    runpy.run_path(str(script), run_name="__main__")
    assert capsys.readouterr().out.strip()
