"""MkDocs hook: the notebook gallery and the environment it is executed in.

- Every jupytext tutorial `notebooks/*.py` becomes a page `notebooks/<name>/` (listed in the nav after
  `notebooks/index.md`, the gallery's index), so a new notebook needs no edit here or in `mkdocs.yml`.
- mkdocs-jupyter executes them in a kernel started from this process, which inherits this environment:
  the repository root goes first on `PYTHONPATH` (the kernel imports this checkout's `jaxrecon`, not
  another installed copy), figures use the inline backend, and `JAXRECON_NOTEBOOK_SIZE` defaults to 32
  (the size the tests use; `JAXRECON_NOTEBOOK_SIZE=64 mkdocs build` renders them at 64 x 64).
- The command-line page gets each subcommand's `--help` text, generated from `jaxrecon.cli`'s parser
  (which imports no JAX), in place of the line `<!-- jaxrecon --help -->`.
- The benchmark figures `benchmarks/results/*.png` are served next to the benchmark pages, which include
  the result files (and so their relative image links) with the snippets extension.
- Executed notebooks are cached by mkdocs-jupyter under a directory per size; the cache key is the
  notebook's text, so delete `.cache/mkdocs-jupyter` after changing the package to re-execute them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.py"))
FIGURES = sorted((ROOT / "benchmarks" / "results").glob("*.png"))
DEFAULT_SIZE = "32"


def on_config(config):
    os.environ.setdefault("JAXRECON_NOTEBOOK_SIZE", DEFAULT_SIZE)
    os.environ.pop("JAXRECON_NOTEBOOK_FIGURES", None)  # figures go into the page, not into files
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    # tqdm.auto (the training loop's progress bar) warns in a kernel without ipywidgets; the notebooks
    # train without progress bars, so the warning would only be noise on the pages.
    quiet = "ignore:IProgress not found"
    warnings = [w for w in os.environ.get("PYTHONWARNINGS", "").split(",") if w and w != quiet]
    os.environ["PYTHONWARNINGS"] = ",".join([*warnings, quiet])
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(ROOT)]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *paths])  # (mkdocs serve calls this per rebuild)

    jupyter = config.plugins["mkdocs-jupyter"].config
    cache = Path(jupyter["cache_dir"])
    cache = cache.parent if cache.name.startswith("size-") else cache
    jupyter["cache_dir"] = str(cache / f"size-{os.environ['JAXRECON_NOTEBOOK_SIZE']}")

    for section in config.nav:
        if isinstance(section, dict) and "Gallery" in section:
            section["Gallery"] = [
                *[p for p in section["Gallery"] if not str(p).endswith(".py")],
                *[f"notebooks/{nb.name}" for nb in NOTEBOOKS],
            ]
    config.watch.append(str(ROOT / "notebooks"))
    return config


@event_priority(100)  # before mkdocs-jupyter's on_files, which turns these files into notebook pages
def on_files(files, config):
    for nb in NOTEBOOKS:
        # src_dir is the repository root, so the page's source is the notebook itself (mkdocs-jupyter
        # wraps the File and recomputes paths from src_dir and src_uri) and its URL is notebooks/<name>/.
        files.append(File(f"notebooks/{nb.name}", str(ROOT), config.site_dir, config.use_directory_urls))
    for fig in FIGURES:  # the benchmark pages include benchmarks/results/*.md, which show these figures
        files.append(File.generated(config, f"benchmarks/{fig.name}", abs_src_path=str(fig)))
    return files


CLI_HELP = "<!-- jaxrecon --help -->"


def on_page_markdown(markdown, page, config, files):
    if CLI_HELP not in markdown:
        return markdown
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps the help text to the terminal's width
    try:
        parser = importlib.import_module("jaxrecon.cli").build_parser()
        (subcommands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        blocks = [("jaxrecon --help", parser.format_help())]
        blocks += [(f"jaxrecon {name} --help", sub.format_help()) for name, sub in subcommands.choices.items()]
    finally:
        if columns is None:
            os.environ.pop("COLUMNS")
        else:
            os.environ["COLUMNS"] = columns
    text = "\n".join(f"### `{title}`\n\n```text\n{help_text.rstrip()}\n```\n" for title, help_text in blocks)
    return markdown.replace(CLI_HELP, text)
