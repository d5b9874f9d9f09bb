"""The package's layout as a test: the modules form one line, declared once in pyproject.toml ([tool.dl4smlm] module_order);
a module imports only from modules before it in that line (so there is no circle), never a private name of another
module, and the notebooks, numbered in that same order, make the file list read as the architecture."""
import ast, json, re, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG, NBS = ROOT / "dl4smlm", ROOT / "nbs"

def declared_order(text=None) -> list:
    "The module order declared in pyproject.toml."
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8") if text is None else text
    try: import tomllib
    except ModuleNotFoundError: return _plain_order(text)      # Python 3.10: no tomllib
    return list(tomllib.loads(text)["tool"]["dl4smlm"]["module_order"])

def _plain_order(text:str) -> list:
    "The module order read without a TOML parser: the list is plain enough."
    block = re.search(r"^\[tool\.dl4smlm\][^\[]*?module_order\s*=\s*\[(.*?)\]", text, re.S | re.M).group(1)
    return re.findall(r'"(\w+)"', re.sub(r"#[^\n]*", "", block))

def package_imports(source:str, package="dl4smlm") -> list:
    "(module, name) for every import of the package in `source`, at any indentation: `from .x import y` gives ('x', 'y'), `import dl4smlm.x` ('x', None)."
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1: mod = node.module or ""
            elif node.level == 0 and node.module and (node.module == package or node.module.startswith(package + ".")):
                mod = node.module[len(package) + 1:]
            else: continue
            out += [(mod, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(a.name[len(package) + 1:], None) for a in node.names if a.name.startswith(package + ".")]
    return out

def graph() -> dict:
    "{module: [(imported module, name), ...]} of dl4smlm/*.py as exported."
    return {p.stem: package_imports(p.read_text(encoding="utf-8")) for p in sorted(PKG.glob("*.py"))
            if p.stem not in ("__init__", "_modidx")}

def upward_imports(g:dict, order:list) -> list:
    "Imports of a module at or after the importer's own place in `order` ('' is the package itself: its version)."
    rank = {m: i for i, m in enumerate(order)}
    return [f"{m} imports {t}" for m, imps in g.items() for t, _ in imps if t and t in rank and rank[t] >= rank[m]]

def circles(g:dict) -> list:
    "Every import circle, as a list of modules (depth-first search)."
    edges = {m: sorted({t for t, _ in imps if t and t in g}) for m, imps in g.items()}
    found, state = [], {}
    def visit(m, path):
        state[m] = "open"
        for t in edges[m]:
            if state.get(t) == "open": found.append(path[path.index(t):] + [t])
            elif t not in state: visit(t, path + [t])
        state[m] = "done"
    for m in sorted(edges):
        if m not in state: visit(m, [m])
    return found

def private_imports(g:dict) -> list:
    "Private names (`_x`) imported from another module of the package."
    return [f"{m} imports {n} from {t}" for m, imps in g.items() for t, n in imps if t and t != m and n and n.startswith("_")]

def notebook_modules() -> list:
    "(notebook, module it exports) in file order."
    out = []
    for p in sorted(NBS.glob("*.ipynb")):
        for c in json.loads(p.read_text(encoding="utf-8"))["cells"]:
            m = re.search(r"^#\|\s*default_exp\s+(\w+)", "".join(c["source"]), re.M)
            if m: out.append((p.name, m.group(1))); break
    return out

# ---- the package as it is

def test_every_module_is_declared_once():
    order, modules = declared_order(), set(graph())
    assert len(order) == len(set(order)), f"declared twice: {[m for m in order if order.count(m) > 1]}"
    assert set(order) == modules, f"not declared: {sorted(modules - set(order))}; declared but missing: {sorted(set(order) - modules)}"

def test_no_import_runs_back_up_the_line():
    assert upward_imports(graph(), declared_order()) == []

def test_no_import_circle():
    assert circles(graph()) == []

def test_no_private_name_crosses_a_module_border():
    assert private_imports(graph()) == []

def test_notebooks_are_numbered_in_the_declared_order():
    assert [m for _, m in notebook_modules()] == declared_order()

def test_lessons_import_no_private_name_of_another_module():
    bad = []
    for name, mod in notebook_modules():
        for c in json.loads((NBS / name).read_text(encoding="utf-8"))["cells"]:
            s = "".join(c["source"])
            if c["cell_type"] != "code" or "dl4smlm" not in s: continue
            code = "\n".join(l for l in s.splitlines() if not l.lstrip().startswith(("#|", "%", "!")))
            bad += [f"{name} imports {n} from {t}" for t, n in package_imports(code) if t and t != mod and n and n.startswith("_")]
    assert bad == []

# ---- the checks catch what they are for

BAD = {"a": [("b", "thing")], "b": [("c", "_helper")], "c": [("a", "other")]}   # a circle, an upward import, a private name

def test_checks_catch_violations():
    assert upward_imports(BAD, ["a", "b", "c"]) == ["a imports b", "b imports c"]     # each imports the module after it
    assert upward_imports(BAD, ["c", "b", "a"]) == ["c imports a"]
    assert circles(BAD) == [["a", "b", "c", "a"]]
    assert private_imports(BAD) == ["b imports _helper from c"]
    assert circles({"a": [("b", "x")], "b": []}) == [] and private_imports({"a": [("a", "_x")]}) == []

def test_imports_found_at_every_indentation():
    src = "from .camera import Camera\nimport dl4smlm.io\ndef f():\n    from .checkpoint import _digest\n    from dl4smlm.train import Trainer\nfrom . import __version__\n"
    assert sorted(package_imports(src), key=str) == sorted([("camera", "Camera"), ("io", None), ("checkpoint", "_digest"), ("train", "Trainer"),
                                                           ("", "__version__")], key=str)

def test_declared_order_read_with_and_without_tomllib():
    text = '[tool.other]\nx = 1\n\n[tool.dl4smlm]\nmodule_order = [  # the line\n    "camera", "simulate",\n    "io",\n]\n'
    assert declared_order(text) == _plain_order(text) == ["camera", "simulate", "io"]
    assert _plain_order((ROOT / "pyproject.toml").read_text(encoding="utf-8")) == declared_order()
