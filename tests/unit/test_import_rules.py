"""Imports point down the flow: the dependency rules of ARCHITECTURE.md and of the modules'
docstrings, checked on the source of every module under itsd/.

Every import counts, at any depth: module level, inside functions, under ``if
TYPE_CHECKING:``, and ``importlib.import_module("itsd...")`` / ``__import__`` calls with a
literal name. Rules marked ``at_import_only`` are about what importing a module costs, so
they skip imports inside functions and under ``if TYPE_CHECKING:``.

A new rule is one entry in RULES. A known violation that is being fixed is one entry in
KNOWN_VIOLATIONS; an entry that no longer happens raises a warning saying to delete it.
"""

from __future__ import annotations

import ast
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "itsd"

#: GPU and inference libraries (top-level import names).
GPU_LIBS = (
    "torch",
    "torchvision",
    "tensorrt",
    "cupy",
    "cuda",
    "pycuda",
    "onnxruntime",
    "ultralytics",
    "PyNvVideoCodec",
)
STDLIB = "<stdlib>"  # in ``allowed``: any module of the standard library
ANY = "*"  # in ``forbidden``: any module at all


@dataclass(frozen=True)
class Rule:
    """Modules matching ``modules`` (and not ``exempt``) must not import a module matching
    ``forbidden`` unless it also matches ``allowed``.

    Patterns: ``a.b`` matches ``a.b`` and its submodules; ``a.b.*`` only its submodules.
    A module importing itself or a package it lives in is never a violation.
    """

    name: str
    source: str  # where the rule is written down
    modules: tuple[str, ...]
    forbidden: tuple[str, ...]
    allowed: tuple[str, ...] = ()
    exempt: tuple[str, ...] = ()
    at_import_only: bool = False


STAGES_UPWARD = ("itsd.control", "itsd.monitor", "itsd.cli", "itsd.supervisor")

RULES: tuple[Rule, ...] = (
    Rule(
        "shm imports nothing else from itsd",
        "ARCHITECTURE.md; itsd/shm/__init__.py",
        modules=("itsd.shm",),
        forbidden=("itsd",),
        allowed=("itsd.shm",),
    ),
    Rule(
        "records import no stage, engine, shared memory or GPU library",
        "ARCHITECTURE.md; itsd/records.py",
        modules=("itsd.records",),
        forbidden=("itsd.stages", "itsd.engines", "itsd.shm", *GPU_LIBS),
    ),
    Rule(
        "analytics never imports engines or a GPU library",
        "ARCHITECTURE.md; itsd/analytics/__init__.py",
        modules=("itsd.analytics",),
        forbidden=("itsd.engines", *GPU_LIBS),
    ),
    Rule(
        "analytics never imports a stage, control, monitor, the CLI or the supervisor",
        "itsd/analytics/__init__.py",
        modules=("itsd.analytics",),
        forbidden=("itsd.stages", *STAGES_UPWARD),
    ),
    Rule(
        "analytics leaf modules import nothing else from itsd",
        "itsd/analytics/{assignment,boxes,classes,motion}.py",
        modules=(
            "itsd.analytics.assignment",
            "itsd.analytics.boxes",
            "itsd.analytics.classes",
            "itsd.analytics.motion",
        ),
        forbidden=("itsd",),
    ),
    Rule(
        "engines never import analytics, a stage, control, monitor or the CLI",
        "ARCHITECTURE.md; itsd/engines/__init__.py",
        modules=("itsd.engines",),
        forbidden=("itsd.analytics", "itsd.stages", "itsd.control", "itsd.monitor", "itsd.cli"),
    ),
    Rule(
        "engines import torch, tensorrt and ultralytics only when a backend needs them",
        "itsd/engines/__init__.py",
        modules=("itsd.engines",),
        forbidden=("torch", "tensorrt", "ultralytics"),
        at_import_only=True,
    ),
    Rule(
        "the model manifest imports nothing from itsd but itsd.errors",
        "itsd/engines/manifest.py",
        modules=("itsd.engines.manifest",),
        forbidden=("itsd",),
        allowed=("itsd.errors",),
    ),
    Rule(
        "the ONNX backend imports nothing from itsd outside itsd.engines and itsd.errors",
        "itsd/engines/onnx_backend.py",
        modules=("itsd.engines.onnx_backend",),
        forbidden=("itsd",),
        allowed=("itsd.engines", "itsd.errors"),
    ),
    Rule(
        "a stage never imports control, monitor, the CLI or the supervisor",
        "ARCHITECTURE.md; itsd/stages/__init__.py",
        modules=("itsd.stages",),
        forbidden=STAGES_UPWARD,
    ),
    Rule(
        "a stage never imports another stage (the harness itsd.stages.runtime excepted)",
        "ARCHITECTURE.md; itsd/stages/__init__.py; itsd/stages/runtime.py",
        modules=("itsd.stages",),
        forbidden=("itsd.stages.*",),
        allowed=("itsd.stages.runtime",),
    ),
    Rule(
        "a stage imports only its own domain package (engines for infer, analytics for analyze)",
        "ARCHITECTURE.md; the stages' docstrings",
        modules=("itsd.stages.decode", "itsd.stages.publish", "itsd.stages.runtime"),
        forbidden=("itsd.engines", "itsd.analytics", *GPU_LIBS),
    ),
    Rule(
        "the analyze stage never imports an engine or a GPU library",
        "itsd/stages/analyze.py",
        modules=("itsd.stages.analyze",),
        forbidden=("itsd.engines", *GPU_LIBS),
    ),
    Rule(
        "the infer stage never decodes or tracks",
        "itsd/stages/infer.py",
        modules=("itsd.stages.infer",),
        forbidden=("itsd.analytics", "itsd.sources"),
    ),
    Rule(
        "control and monitor never import a stage or an engine",
        "ARCHITECTURE.md; itsd/control/__init__.py; itsd/monitor/__init__.py",
        modules=("itsd.control", "itsd.monitor"),
        forbidden=("itsd.stages", "itsd.engines"),
    ),
    Rule(
        "control never imports analytics, the monitor or the CLI",
        "itsd/control/__init__.py",
        modules=("itsd.control",),
        forbidden=("itsd.analytics", "itsd.monitor", "itsd.cli"),
        exempt=("itsd.control._pb",),
    ),
    Rule(
        "the monitor never imports the supervisor",
        "itsd/monitor/__init__.py",
        modules=("itsd.monitor",),
        forbidden=("itsd.supervisor",),
    ),
    Rule(
        "the ControlBackend contract imports no other part of itsd, grpc or protobuf",
        "itsd/control/backend.py",
        modules=("itsd.control.backend",),
        forbidden=("itsd", "grpc", "google.protobuf"),
    ),
    Rule(
        "importing itsd.control stays cheap: no submodule, grpc or protobuf",
        "itsd/control/__init__.py",
        modules=("itsd.control",),
        exempt=("itsd.control.*",),
        forbidden=("itsd.control.*", "grpc", "google.protobuf"),
        at_import_only=True,
    ),
    Rule(
        "generated gRPC code is imported only by itsd.control and the CLI",
        "ARCHITECTURE.md",
        modules=("itsd",),
        exempt=("itsd.control", "itsd.cli"),
        forbidden=("itsd.control._pb",),
    ),
    Rule(
        "config, logutil, redact and errors import no stage, engine, supervisor or control",
        "ARCHITECTURE.md; their docstrings",
        modules=("itsd.config", "itsd.logutil", "itsd.redact", "itsd.errors"),
        forbidden=(
            "itsd.stages",
            "itsd.engines",
            "itsd.supervisor",
            "itsd.control",
            "itsd.monitor",
            "itsd.cli",
            *GPU_LIBS,
        ),
    ),
    Rule(
        "errors imports nothing else from itsd",
        "itsd/errors.py",
        modules=("itsd.errors",),
        forbidden=("itsd",),
    ),
    Rule(
        "redact imports only the standard library",
        "itsd/redact.py",
        modules=("itsd.redact",),
        forbidden=(ANY,),
        allowed=(STDLIB,),
    ),
    Rule(
        "logutil imports only the standard library and itsd.redact",
        "itsd/logutil.py",
        modules=("itsd.logutil",),
        forbidden=(ANY,),
        allowed=(STDLIB, "itsd.redact"),
    ),
    Rule(
        "the CLI imports no stage, engine or numpy at import time",
        "ARCHITECTURE.md; itsd/cli.py",
        modules=("itsd.cli",),
        forbidden=("itsd.stages", "itsd.engines", "numpy", *GPU_LIBS),
        at_import_only=True,
    ),
    Rule(
        "importing itsd stays cheap: no numpy, backend or GPU library",
        "itsd/__init__.py",
        modules=("itsd",),
        exempt=("itsd.*",),
        forbidden=("numpy", *GPU_LIBS),
        at_import_only=True,
    ),
    Rule(
        "the supervisor never imports a stage module (it spawns them through the harness)",
        "itsd/supervisor/__init__.py; itsd/supervisor/core.py",
        modules=("itsd.supervisor",),
        forbidden=("itsd.stages.*",),
        allowed=("itsd.stages.runtime",),
    ),
    Rule(
        "the supervisor's ControlBackend imports nothing from itsd.stages",
        "itsd/supervisor/backend.py (it reads shared memory only)",
        modules=("itsd.supervisor.backend",),
        forbidden=("itsd.stages",),
    ),
    Rule(
        "runtime never imports a stage, the supervisor, control or monitor",
        "ARCHITECTURE.md; itsd/runtime/__init__.py",
        modules=("itsd.runtime",),
        forbidden=("itsd.stages", "itsd.supervisor", "itsd.control", "itsd.monitor", "itsd.cli"),
    ),
    Rule(
        "the fleet never imports a stage, an engine, analytics, control, monitor or the CLI",
        "itsd/fleet/__init__.py",
        modules=("itsd.fleet",),
        forbidden=(
            "itsd.stages",
            "itsd.engines",
            "itsd.analytics",
            "itsd.control",
            "itsd.monitor",
            "itsd.cli",
            *GPU_LIBS,
        ),
    ),
    Rule(
        "sources never import a stage",
        "ARCHITECTURE.md; itsd/sources/__init__.py",
        modules=("itsd.sources",),
        forbidden=("itsd.stages", *STAGES_UPWARD),
    ),
    Rule(
        "the store never imports a stage, analytics, control, monitor, the CLI or the supervisor",
        "itsd/store/__init__.py",
        modules=("itsd.store",),
        forbidden=("itsd.stages", "itsd.engines", "itsd.analytics", *STAGES_UPWARD, *GPU_LIBS),
    ),
    Rule(
        "the store's schema and records import nothing else from itsd",
        "itsd/store/{schema,model}.py",
        modules=("itsd.store.schema", "itsd.store.model"),
        forbidden=("itsd",),
    ),
)

#: (rule name, importing module, imported module) that break a rule today and are being
#: removed. Delete an entry once its import is gone (the test says when).
KNOWN_VIOLATIONS: frozenset[tuple[str, str, str]] = frozenset()


# ----------------------------------------------------------------------------- the checker
@dataclass(frozen=True)
class Import:
    target: str
    line: int
    at_import: bool  # runs when the module is imported (not in a function, not TYPE_CHECKING)


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, package.parent): p for p in sorted(package.rglob("*.py"))}


def matches(module: str, pattern: str) -> bool:
    if pattern == ANY:
        return True
    if pattern == STDLIB:
        return module.split(".", maxsplit=1)[0] in sys.stdlib_module_names
    if pattern.endswith(".*"):
        return module.startswith(pattern[:-1])
    return module == pattern or module.startswith(pattern + ".")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _is_dynamic_import(call: ast.Call) -> bool:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return name in ("import_module", "__import__")


def collect_imports(source: str, module: str, is_package: bool, known: set[str]) -> list[Import]:
    """Every import in ``source`` (the text of ``module``), resolved to a module name."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []

    def resolve_relative(level: int, name: str | None) -> str:
        base = package.split(".")
        base = base[: len(base) - (level - 1)]
        return ".".join([*base, name] if name else base)

    def visit(node: ast.AST, at_import: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend(Import(a.name, node.lineno, at_import) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = resolve_relative(node.level, node.module) if node.level else node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append(Import(sub if sub in known else base, node.lineno, at_import))
        elif isinstance(node, ast.Call) and _is_dynamic_import(node):
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                name = arg.value
                if name.startswith("."):
                    level = len(name) - len(name.lstrip("."))
                    name = resolve_relative(level, name.lstrip(".") or None)
                found.append(Import(name, node.lineno, at_import))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            at_import = False
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            visit(node.test, at_import)
            for stmt in node.body:
                visit(stmt, False)
            for stmt in node.orelse:
                visit(stmt, at_import)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, at_import)

    visit(ast.parse(source), True)
    return list(dict.fromkeys(found))  # one entry per module and line


@dataclass(frozen=True)
class Violation:
    rule: Rule
    module: str
    path: Path
    imp: Import

    def key(self) -> tuple[str, str, str]:
        return (self.rule.name, self.module, self.imp.target)

    def __str__(self) -> str:
        where = self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path
        return (
            f"{where}:{self.imp.line}: imports {self.imp.target}: breaks rule "
            f"'{self.rule.name}' ({self.rule.source})"
        )


def _in_package(module: str, target: str) -> bool:
    """``target`` is ``module`` itself or a package ``module`` lives in."""
    return module == target or module.startswith(target + ".")


def violations(modules: dict[str, Path], rules: tuple[Rule, ...] = RULES) -> Iterator[Violation]:
    known = set(modules)
    for module, path in modules.items():
        applicable = [
            r
            for r in rules
            if any(matches(module, p) for p in r.modules)
            and not any(matches(module, p) for p in r.exempt)
        ]
        if not applicable:
            continue
        is_package = path.name == "__init__.py"
        for imp in collect_imports(path.read_text(encoding="utf-8"), module, is_package, known):
            if _in_package(module, imp.target):
                continue
            for rule in applicable:
                if rule.at_import_only and not imp.at_import:
                    continue
                if any(matches(imp.target, p) for p in rule.forbidden) and not any(
                    matches(imp.target, p) for p in rule.allowed
                ):
                    yield Violation(rule, module, path, imp)


# ----------------------------------------------------------------------------- the tests
def test_every_module_keeps_the_rules() -> None:
    found = [v for v in violations(all_modules()) if v.key() not in KNOWN_VIOLATIONS]
    assert not found, "import rule violations:\n" + "\n".join(map(str, found))


def test_known_violations_still_happen() -> None:
    """A fixed violation should leave the allow-list, so it cannot come back unnoticed.

    A warning rather than a failure while the modules concerned are being rewritten (the
    fix may sit in a working tree before it is committed); make it an assertion once
    KNOWN_VIOLATIONS is empty.
    """
    current = {v.key() for v in violations(all_modules())}
    stale = sorted(KNOWN_VIOLATIONS - current)
    if stale:
        warnings.warn(
            "fixed, delete from KNOWN_VIOLATIONS in tests/unit/test_import_rules.py:\n"
            + "\n".join(map(str, stale)),
            stacklevel=1,
        )


def test_rules_name_real_packages() -> None:
    modules = all_modules()
    rule_names = [r.name for r in RULES]
    assert len(rule_names) == len(set(rule_names))
    for rule in RULES:
        for pattern in rule.modules:
            assert any(matches(m, pattern) for m in modules), (rule.name, pattern)
    for name, module, _ in KNOWN_VIOLATIONS:
        assert name in rule_names and module in modules


# --------------------------------------------------------------- the checker on small trees
def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return all_modules(tmp_path / "itsd")


RULE_SHM = RULES[0]
RULE_CLI = next(r for r in RULES if r.name.startswith("the CLI"))


@pytest.mark.parametrize(
    "text",
    [
        "import itsd.config\n",
        "from itsd import config\n",
        "from .. import config\n",
        "from ..config import Config\n",
        "def f():\n    import itsd.config\n",
        "class C:\n    def m(self):\n        from itsd.config import Config\n",
        "import importlib\nimportlib.import_module('itsd.config')\n",
        "from importlib import import_module\ndef f():\n    return import_module('itsd.config')\n",
        "__import__('itsd.config')\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from itsd.config import C\n",
        "try:\n    import itsd.config\nexcept ImportError:\n    pass\n",
    ],
)
def test_checker_finds_imports_at_any_depth(tmp_path: Path, text: str) -> None:
    modules = _tree(
        tmp_path,
        {
            "itsd/__init__.py": "",
            "itsd/config.py": "",
            "itsd/shm/__init__.py": "",
            "itsd/shm/ring.py": text,
        },
    )
    found = list(violations(modules, (RULE_SHM,)))
    assert [(v.module, v.imp.target) for v in found] == [("itsd.shm.ring", "itsd.config")]
    assert str(found[0]).endswith(
        f"imports itsd.config: breaks rule '{RULE_SHM.name}' ({RULE_SHM.source})"
    )


def test_checker_allows_the_own_package(tmp_path: Path) -> None:
    text = "from itsd.shm import atomics\nfrom . import atomics as a\nimport itsd.shm.atomics\n"
    modules = _tree(
        tmp_path,
        {
            "itsd/__init__.py": "",
            "itsd/shm/__init__.py": "from itsd.shm.ring import R\n",
            "itsd/shm/atomics.py": "",
            "itsd/shm/ring.py": text,
        },
    )
    assert list(violations(modules, (RULE_SHM,))) == []


def test_import_time_rules_skip_functions_and_type_checking(tmp_path: Path) -> None:
    lazy = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from itsd.stages.decode import run\n"
        "def start():\n    from itsd.stages import decode\n"
    )
    eager = "from itsd.stages.decode import run\n"
    base = {"itsd/__init__.py": "", "itsd/stages/__init__.py": "", "itsd/stages/decode.py": ""}
    assert list(violations(_tree(tmp_path / "a", {**base, "itsd/cli.py": lazy}), (RULE_CLI,))) == []
    found = list(violations(_tree(tmp_path / "b", {**base, "itsd/cli.py": eager}), (RULE_CLI,)))
    assert [(v.imp.target, v.imp.line) for v in found] == [("itsd.stages.decode", 1)]
