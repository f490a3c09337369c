"""The dependency direction is enforced: asu is a plain library (no orchestration, tracking or GX imports)."""

import subprocess
import sys

FORBIDDEN = ("prefect", "mlflow", "great_expectations", "pipelines", "flows", "data_contracts")


def test_importing_asu_pulls_no_orchestration_or_tracking():
    code = (
        "import sys, asu, asu.trainer, asu.teacher, asu.attention, asu.evaluation, asu.embedded, asu.recipes\n"
        f"print(','.join(m for m in {FORBIDDEN!r} if any(k == m or k.startswith(m + '.') for k in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def _imports(package: str) -> dict[str, set[str]]:
    """{module file: top-level names it imports} for every module of ``package`` (static, by AST)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    found = {}
    for path in (root / package).rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(root))] = names
    return found


def test_layers_import_downward_only_and_nothing_imports_bench():
    """cli -> flows -> pipelines -> {asu, data_contracts}; bench is a developer tool no product module imports."""
    above = {"asu": {"pipelines", "flows", "cli", "bench", "data_contracts"},
             "data_contracts": {"pipelines", "flows", "cli", "bench"},
             "pipelines": {"flows", "cli", "bench"},
             "flows": {"cli", "bench"},
             "cli": {"bench"}}
    wrong = {f"{module} imports {sorted(names & forbidden)}"
             for package, forbidden in above.items() for module, names in _imports(package).items()
             if names & forbidden}
    assert not wrong, sorted(wrong)


def test_the_command_and_the_intake_start_without_torch():
    """`asu` sets its offline switches before transformers loads, and the intake stays light: neither imports torch."""
    code = ("import sys, cli.main, pipelines.intake.submit, asu.errors, asu.qa_file, asu.hashing\n"
            "print(','.join(m for m in ('torch', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
