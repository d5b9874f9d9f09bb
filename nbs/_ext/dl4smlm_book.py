"""How the book shows the notebooks: the lesson in front, the library behind, and nothing fetched from another host.

A Sphinx extension, registered in `_config.yml` (`sphinx: local_extensions`). It changes what the book
renders, never the notebooks on disk, so nbdev-clean and nbdev-export see them as they are.

- nbdev directives (`#| export`, `#| default_exp simulate`, `#| slow`, ...) are taken out of every code
  cell as myst-nb reads the notebook; a cell that held nothing else is not shown.
- Exported library code (`#| export`, `#| exporti`) is folded behind a "Show library code" toggle
  (myst-nb's `hide-input` tag); its output, if any, stays visible.
- Exercise solutions (`#| solution`, this project's own directive, which nbdev ignores) are folded, input and
  output, behind a "Show solution" toggle (myst-nb's `hide-cell` tag); tools/make_student_copies.py removes them.
- nbdev's display directives keep their meaning: `#| hide` removes the cell, `#| echo: false` its
  input, `#| output: false` its output.
- Types defined in the chapter itself print as `__main__.Camera` in `show_doc`'s signatures (the notebook is
  `__main__` when it runs); the book shows them as `Camera`, the name the reader sees defined above.
- Code is highlighted as Python: nbdev-clean strips the notebooks' language metadata, which myst-nb
  needs to choose a lexer.
- MathJax is served from the book's own `_static/mathjax/`, copied from `nbs/_vendor/mathjax/`, which
  `tools/fetch_mathjax.sh` fills from the npm registry (tools/test.sh runs it before the build).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.errors import ExtensionError

DIRECTIVE = re.compile(r"^\s*#\s*\|(.*)$")
FOLDED = {"export", "exporti"}  # exported code: behind a toggle
SOLUTION = "solution"  # an exercise's solution: input and output behind a toggle
REMOVE_TAG = {"hide": "remove-cell", "echo": "remove-input", "output": "remove-output"}
MATHJAX = "mathjax/es5/tex-mml-chtml.js"  # under _static/


def _directive(text: str) -> tuple[str, str]:
    "`' export'` → `('export', '')`; `' echo: false'` → `('echo', 'false')`."
    name, _, value = text.strip().partition(" ")
    name, colon, after = name.partition(":")
    return name.strip().lower(), (after + " " + value if colon else value).strip().lower()


def _tags_for(directives: list[tuple[str, str]], code: str, has_outputs: bool) -> list[str]:
    tags = []
    if not code.strip():
        tags.append("remove-input" if has_outputs else "remove-cell")
    for name, value in directives:
        if name in FOLDED:
            tags.append("hide-input")
        elif name == SOLUTION:
            tags.append("hide-cell")
        elif name == "hide" or (name in ("echo", "output") and value == "false"):
            tags.append(REMOVE_TAG[name])
    return tags


def _unqualify(outputs: list) -> None:
    "`__main__.Camera` → `Camera` in the text of rich outputs (show_doc's signatures), in place."
    for out in outputs:
        for mime, text in (out.get("data") or {}).items():
            if mime.startswith("text/"):
                out["data"][mime] = [t.replace("__main__.", "") for t in text] if isinstance(text, list) else text.replace("__main__.", "")


def present_cell(cell: dict) -> dict:
    "Take the nbdev directives out of a code cell and tag it to be folded or removed (the cell is changed in place)."
    if cell.get("cell_type") != "code":
        return cell
    _unqualify(cell.get("outputs") or [])
    source = cell.get("source", "")
    lines = ("".join(source) if isinstance(source, list) else source).splitlines(keepends=True)
    directives = [_directive(m.group(1)) for m in map(DIRECTIVE.match, lines) if m]
    if not directives:
        return cell
    code = [line for line in lines if not DIRECTIVE.match(line)]
    while code and not code[0].strip():
        code.pop(0)
    cell["source"] = "".join(code)
    metadata = cell.setdefault("metadata", {})
    tags = metadata.setdefault("tags", [])
    for tag in _tags_for(directives, cell["source"], bool(cell.get("outputs"))):
        if tag not in tags:
            tags.append(tag)
    task = re.match(r"#\s*your turn\s*(\d+)", cell["source"], re.I)    # a solution says which task it solves
    shown = (f"solution {task.group(1)}" if task else "solution") if "hide-cell" in tags else "library code" if "hide-input" in tags else None
    if shown:
        prompts = metadata.setdefault("mystnb", {})
        prompts.setdefault("code_prompt_show", f"Show {shown}")
        prompts.setdefault("code_prompt_hide", f"Hide {shown}")
    return cell


def present_notebook(text: str) -> str:
    "The JSON text of a notebook, as the book should show it."
    nb = json.loads(text)
    metadata = nb.setdefault("metadata", {})
    if not (metadata.get("language_info") or metadata.get("kernelspec")):  # nbdev-clean strips both
        metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}  # so code is highlighted
    for cell in nb.get("cells", []):
        present_cell(cell)
    return json.dumps(nb, ensure_ascii=False)


def _on_source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    if str(app.env.doc2path(docname)).endswith(".ipynb"):
        source[0] = present_notebook(source[0])


def _on_config_inited(app: Sphinx, config: Config) -> None:
    vendor = Path(app.srcdir) / "_vendor"
    if not (vendor / "mathjax" / "es5" / "tex-mml-chtml.js").is_file():
        raise ExtensionError(
            f"{vendor / 'mathjax'}: MathJax is missing; run `bash tools/fetch_mathjax.sh` (needs npm) before building the book"
        )
    config.mathjax_path = MATHJAX
    config.html_static_path = [*config.html_static_path, str(vendor)]


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", _on_config_inited)
    app.connect("source-read", _on_source_read)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
