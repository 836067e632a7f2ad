"""The documentation site (mkdocs.yml, docs/) covers the package and the committed benchmark results.

Static checks, no mkdocs needed: `mkdocs build --strict` (CI, `.ci/run`) checks the rest.
"""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxrecon"
DOCS = ROOT / "docs"
DIRECTIVE = re.compile(r"^:::\s+(\S+)", re.MULTILINE)
SNIPPET = re.compile(r'^--8<--\s+"([^"]+)"', re.MULTILINE)


def _documented() -> set[str]:
    return {m for page in (DOCS / "api").glob("*.md") for m in DIRECTIVE.findall(page.read_text())}


def _public_modules() -> list[str]:
    modules = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] in ("__init__", "__main__") or any(p.startswith("_") for p in parts[1:]):
            continue
        modules.append(".".join(parts))
    return modules


def test_every_public_module_has_an_api_section():
    documented = _documented()
    missing = [m for m in _public_modules() if not any(m == d or m.startswith(d + ".") for d in documented)]
    assert not missing, (
        f"modules missing from the API pages: {missing}; add a `::: <module>` line to docs/api/<subpackage>.md "
        "(a new subpackage: a new page, listed in mkdocs.yml's nav)"
    )


def test_names_exported_from_private_modules_are_documented():
    documented = _documented()
    missing = []
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        package = f"jaxrecon.{init.parent.name}"
        for node in ast.walk(ast.parse(init.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and (node.module or "").startswith("_"):
                missing += [f"{package}.{a.name}" for a in node.names if f"{package}.{a.name}" not in documented]
    assert not missing, f"add `::: <name>` lines for these names to the API pages: {missing}"


def test_every_api_page_is_in_the_nav():
    config = (ROOT / "mkdocs.yml").read_text()
    missing = [p.name for p in (DOCS / "api").glob("*.md") if f"api/{p.name}" not in config]
    assert not missing, f"API pages not listed in mkdocs.yml's nav: {missing}"


def test_every_benchmark_result_is_on_a_benchmark_page():
    included = {s for page in (DOCS / "benchmarks").glob("*.md") for s in SNIPPET.findall(page.read_text())}
    results = {p.relative_to(ROOT).as_posix() for p in (ROOT / "benchmarks" / "results").rglob("*.md")}
    assert not results - included, f"include these with --8<-- on a docs/benchmarks page: {sorted(results - included)}"
    assert not included - results, f"included but missing: {sorted(included - results)}"


def test_every_notebook_is_in_the_gallery_index():
    index = (DOCS / "notebooks" / "index.md").read_text()
    notebooks = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9]*.py"))
    assert notebooks, "no notebooks found"
    missing = [n for n in notebooks if f"]({n})" not in index]
    assert not missing, f"add these notebooks to the gallery's table in docs/notebooks/index.md: {missing}"
