"""The package layout is the design: each step is a sub-package, imports only run down the path
recipe -> policy + data -> train -> report -> hub, and `hf_dpo.run` is the one module that wires them."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "hf_dpo"

# What each part may import from hf_dpo (besides itself and the top-level leaves: argv, config, data, errors, files,
# model_files).
LEAVES = {
    "hf_dpo",
    "hf_dpo.argv",
    "hf_dpo.config",
    "hf_dpo.data",
    "hf_dpo.errors",
    "hf_dpo.files",
    "hf_dpo.model_files",
}
ALLOWED = {
    "hf_dpo.model": set(),
    "hf_dpo.train": {"hf_dpo.model"},
    "hf_dpo.pairs": {"hf_dpo.model"},
    "hf_dpo.report": {"hf_dpo.model", "hf_dpo.pairs", "hf_dpo.train"},
    "hf_dpo.hub": {"hf_dpo.report"},
    "hf_dpo.plan": {"hf_dpo.model", "hf_dpo.train"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def hf_dpo_imports(path: Path) -> set[str]:
    """Every hf_dpo module `path` imports, at top level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hf_dpo"):
            found.add(node.module)
            for alias in node.names:  # `from hf_dpo.train import ref_cache` imports a module
                if (
                    (PACKAGE.parent / (node.module + "." + alias.name).replace(".", "/"))
                    .with_suffix(".py")
                    .exists()
                ):
                    found.add(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("hf_dpo")}
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): hf_dpo_imports(p) for p in PACKAGE.rglob("*.py")}


def part(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_each_subpackage_imports_only_the_steps_before_it():
    wrong = []
    for module, imports in graph().items():
        if part(module) not in ALLOWED:
            continue
        allowed = ALLOWED[part(module)] | LEAVES | {part(module)}
        wrong += [f"{module} -> {imp}" for imp in imports if part(imp) not in allowed and imp not in allowed]
    assert not wrong, "imports against the layout:\n" + "\n".join(sorted(wrong))


def test_only_the_cli_bench_and_iterate_import_the_run_module():
    users = {m for m, imports in graph().items() if "hf_dpo.run" in imports}
    assert users <= {"hf_dpo.cli", "hf_dpo.bench", "hf_dpo.iterate"}, users


def test_no_import_circle():
    edges = {m: {i for i in imports if i != m} for m, imports in graph().items()}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges or nxt == "hf_dpo":
                continue
            if state.get(nxt) == 1:
                return stack + [node, nxt]
            if nxt not in state and (cycle := visit(nxt, stack + [node])):
                return cycle
        state[node] = 2
        return None

    for module in sorted(edges):
        if module not in state and (cycle := visit(module, [])):
            raise AssertionError("import circle: " + " -> ".join(cycle))


def test_the_report_text_and_the_push_import_no_array_library():
    """The markdown of the report and card, and a push, are text and files: `import hf_dpo.report.markdown` and
    `import hf_dpo.hub.push` pull in neither torch nor numpy. Before: markdown imported report.estimates (numpy, and
    torch through train.loss) for one dict test, and the push numpy for a file name."""
    import subprocess
    import sys

    code = (
        "import sys, hf_dpo.report.markdown, hf_dpo.hub.push, hf_dpo.hub.card\n"
        "print(sorted(m for m in ('torch', 'numpy', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
