"""The architecture the README claims, checked: no import cycles, the core never names a backend, and every
backend (the bundled ones and a third-party one installed through the entry point) honours one contract.

The import graph is read with ``ast`` from the source (no module is imported): every ``import`` of an
edgevision module, at module level or inside a function (a lazy import still ties the two modules
together), except under ``if TYPE_CHECKING:`` (never executed).
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import os
import subprocess
import sys
import typing
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import pytest

from conftest import REPO, tiny_onnx

PACKAGE = REPO / "edgevision"
TOY_DIR = REPO / "tests" / "toy_backend"
TOY_TARGET = TOY_DIR / "toy-cpu.toml"


# --- the import graph ----------------------------------------------------------------------------

def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            if not _type_checking_only(child):
                stack.append(child)
    return found


def imports_of(name: str, path: Path, tree: ast.AST, known: set[str]) -> set[str]:
    """The edgevision modules ``name`` imports: ``from pkg import mod`` is an edge to pkg.mod when that is a
    module, else to pkg; relative imports are resolved against the module's package."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out: set[str] = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
            continue
        base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else [])) \
            if node.level else (node.module or "")
        for alias in node.names:
            out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in out if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    modules = source_modules()
    known = set(modules)
    return {name: imports_of(name, path, ast.parse(path.read_text(), str(path)), known)
            for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 80 and graph["edgevision.backends.tvm.build"] >= {"edgevision.backends.tvm.tuning"}
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


# --- "names a backend" ---------------------------------------------------------------------------
# A module names a backend when it (1) imports a backend's module (edgevision.backends.<name>...), or
# (2) compares a value with a backend's name (==, !=, in, not in; also a literal in a tuple/list/set
# compared against), matches on it (match/case), keys a dict by it, or passes it to get_backend().
# A backend's name appearing in prose (a log line, help text) or as a Python package name
# (``import onnxruntime`` for the gate's reference) is not naming it: nothing branches on it.

INTERFACE_MODULES = {"edgevision.backends", "edgevision.backends.base"}


def _literals(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


def names_of_backends(source: str, module: str, backends: set[str], graph_edges: set[str]) -> list[str]:
    """Where ``source`` (the module ``module``) names one of ``backends``; one line per finding."""
    found = [f"imports {m}" for m in sorted(graph_edges)
             if m.startswith("edgevision.backends.") and m not in INTERFACE_MODULES]
    for node in ast.walk(ast.parse(source)):
        hits: list[str] = []
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                hits += _literals(operand)
        elif isinstance(node, ast.MatchValue):
            hits += _literals(node.value)
        elif isinstance(node, ast.Dict):
            for key in node.keys:
                if key is not None:
                    hits += _literals(key)
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if called == "get_backend":
                for arg in node.args:
                    hits += _literals(arg)
        found += [f"line {node.lineno}: {type(node).__name__} on {hit!r}" for hit in hits if hit in backends]
    return [f"{module}: {line}" for line in found]


def test_no_module_outside_backends_names_a_backend() -> None:
    from edgevision.backends import backend_names

    backends = set(backend_names())
    assert {"onnxruntime", "openvino", "tensorrt", "tvm"} <= backends
    graph = import_graph()
    found = []
    for module, path in source_modules().items():
        if module == "edgevision.backends" or module.startswith("edgevision.backends."):
            continue
        found += names_of_backends(path.read_text(), module, backends, graph[module])
    assert found == []


def test_the_naming_rule_catches_what_it_claims_and_nothing_else() -> None:
    backends = {"tvm", "onnxruntime"}
    naming = '''
if target.backend == "tvm": pass
ok = manifest.backend in ("onnxruntime", "openvino")
RUNNERS = {"tvm": run}
get_backend("onnxruntime")
match name:
    case "tvm": pass
'''
    hits = names_of_backends(naming, "m", backends, {"edgevision.backends.tvm.cpu", "edgevision.backends.base"})
    assert len(hits) == 6 and hits[0] == "m: imports edgevision.backends.tvm.cpu", hits
    innocent = '''
import onnxruntime as ort
log.info("tvm is slow to import")
help_text = "onnxruntime, or anything else"
if precision == "int8": pass
get_backend(manifest.backend)
'''
    assert names_of_backends(innocent, "m", backends, {"edgevision.backends"}) == []


# --- the backend contract ------------------------------------------------------------------------

def install_toy(folder: Path) -> Path:
    """A dist-info registering tests/toy_backend/edgevision_toy.py under the ``edgevision.backends``
    entry point, as ``pip install`` of a plugin package would leave it."""
    info = folder / "edgevision_toy-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: edgevision-toy\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[edgevision.backends]\ntoy = edgevision_toy:ToyBackend\n")
    return folder


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory):
    folder = install_toy(tmp_path_factory.mktemp("site"))
    sys.path[:0] = [str(folder), str(TOY_DIR)]
    try:
        yield folder
    finally:
        for entry in (str(folder), str(TOY_DIR)):
            sys.path.remove(entry)
        sys.modules.pop("edgevision_toy", None)


def _bundled_backends() -> list[str]:
    from edgevision.backends import backend_names

    return backend_names()


def _target_for(name: str):
    from edgevision.targets import available_targets, get_target

    if name == "toy":
        return get_target(str(TOY_TARGET))
    here = [t for t in available_targets().values() if t.backend == name]
    import platform

    # A target of this host's CPU where there is one, so that compile, load and run all happen here.
    return sorted(here, key=lambda t: (t.arch != platform.machine(), bool(t.options.get("cross_compiler")), t.name))[0]



# Options that keep a contract compile small (TVM's default schedule search times candidates).
# The toy's: not its default, so that the recorded options are seen to be the ones given.
FAST_OPTIONS = {"tvm": {"default_schedule": "off"}, "toy": {"optimization": "extended"}}


@pytest.mark.parametrize("name", [*_bundled_backends(), "toy"])
def test_backend_contract(name: str, toy: Path, tmp_path: Path) -> None:
    import importlib.util

    from edgevision.backends import Backend, backend_names, get_backend
    from edgevision.compiler import CompileRequest, compile_model
    from edgevision.compiler.pipeline import _check_options
    from edgevision.errors import BackendUnavailable, InputError
    from edgevision.runtime import load

    assert name in backend_names()  # the toy too: found through its entry point
    backend = get_backend(name)
    assert isinstance(backend, Backend) and backend.name == name

    # availability and version agree with the runtime library being importable here
    available = backend.is_available()
    assert available == (importlib.util.find_spec(backend.runtime_module) is not None)
    version = backend.version()
    assert (version is None) != available and (version is None or isinstance(version, str) and version)
    target = _target_for(name)

    # options: an unknown key is one line naming the problem and the fix; a misspelt one names the
    # key meant; every declared key is taken with its default; a typed key refuses a value of another type
    with pytest.raises(InputError) as refused:
        _check_options({"no_such_option": "1"}, target, backend, target.default_precision)
    assert "no_such_option" in str(refused.value) and "\n" not in str(refused.value) and refused.value.fix
    schema = {f.name: f for f in dataclasses.fields(backend.options_schema)}
    assert set(schema) <= backend.option_keys
    _check_options({k: f.default for k, f in schema.items()}, target, backend, target.default_precision)
    for key in sorted(backend.option_keys)[:1]:
        with pytest.raises(InputError, match=f"did you mean {key}"):
            _check_options({key[:-1]: "1"}, target, backend, target.default_precision)
    hints = typing.get_type_hints(backend.options_schema)
    for key in [k for k, kind in hints.items() if kind in (int, bool) or typing.get_origin(kind) is typing.Literal]:
        with pytest.raises(InputError, match=f"{key}='not-a-value'") as bad:
            _check_options({key: "not-a-value"}, target, backend, target.default_precision)
        assert "\n" not in str(bad.value)

    # CLI flags: none given means no options; every flag maps to a key the backend takes
    parser = argparse.ArgumentParser()
    backend.add_cli_arguments(parser)
    assert backend.options_from_cli(parser.parse_args([])) == {}

    can_run, why = backend.can_run(target)
    if not can_run:
        # Not runnable here (TensorRT: no GPU): the API boundary says so in words, and so does load.
        assert why and not (available and backend.runs_on(target, __import__("platform").machine()))
        assert backend.compile_requirements(target) or why
        return

    # compile, load, run: the real pipeline, then the runtime; the outputs are ONNX Runtime's on the graph
    model = tiny_onnx(tmp_path / "tiny.onnx")
    out = tmp_path / f"tiny.{name}.evpkg"
    result = compile_model(CompileRequest(model=str(model), target=str(TOY_TARGET) if name == "toy" else target.name, output=out,
                                          labels=[f"class {i}" for i in range(10)], gate=False,
                                          options=FAST_OPTIONS.get(name, {})))
    assert result.manifest.backend == name and out.is_file()
    from edgevision.artifact import read_manifest

    # the typed options are recorded in the manifest and read back equal (and typed) from the file
    assert backend.recorded_options(read_manifest(out)) == backend.parse_options(FAST_OPTIONS.get(name, {}))
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    import onnxruntime as ort

    expected = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with load(out) as loaded:
        got = loaded.run(x)
    assert got.shape == (1, 10) and np.allclose(got, expected, rtol=1e-3, atol=1e-4)
    with pytest.raises((InputError, BackendUnavailable)):
        load(out, device="no-such-device").close()


def test_the_toy_backends_flag_reaches_the_cli_and_its_option_the_artifact(toy: Path, tmp_path: Path) -> None:
    """A plugin's flag is an `edgevision compile` flag in a fresh process and reaches its payload; a misspelt
    or mistyped --option of the plugin fails in one line before anything is written."""
    from edgevision.artifact import read_manifest

    model = tiny_onnx(tmp_path / "tiny.onnx")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(toy), str(TOY_DIR)])}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edgevision.cli", *args], capture_output=True, text=True,
                              timeout=300, env=env)

    helped = cli("compile", "--help")
    assert helped.returncode == 0 and "--toy-optimization" in helped.stdout and "--tune" in helped.stdout
    out = tmp_path / "tiny.toy.evpkg"
    built = cli("compile", str(model), "--target", str(TOY_TARGET), "--toy-optimization", "basic",
                "--labels", ",".join(str(i) for i in range(10)), "--no-gate", "-o", str(out))
    assert built.returncode == 0, built.stderr[-2000:]
    assert read_manifest(out).payload["optimization"] == "basic"
    wrong = cli("compile", str(model), "--target", str(TOY_TARGET), "--option", "optimisation=basic",
                "--labels", ",".join(str(i) for i in range(10)), "--no-gate", "-o", str(tmp_path / "x.evpkg"))
    assert wrong.returncode != 0 and "Traceback" not in wrong.stderr
    assert "option optimisation is not used" in wrong.stderr and "did you mean optimization?" in wrong.stderr
    bad = cli("compile", str(model), "--target", str(TOY_TARGET), "--option", "optimization=fastest",
              "--labels", ",".join(str(i) for i in range(10)), "--no-gate", "-o", str(tmp_path / "x.evpkg"))
    assert bad.returncode != 0 and "optimization='fastest' is not one of basic, extended, all" in bad.stderr
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "Traceback" not in bad.stderr and not (tmp_path / "x.evpkg").exists()


def test_one_options_parser_types_every_field_and_refuses_in_one_line(tmp_path: Path) -> None:
    from dataclasses import dataclass

    from edgevision.artifact.manifest import Manifest
    from edgevision.backends import get_backend
    from edgevision.backends.base import option, options_to_json, read_options
    from edgevision.errors import ArtifactError, InputError

    @dataclass(frozen=True)
    class Example:
        count: int = option(1, "an int")
        ratio: float = option(0.5, "a float")
        on: bool = option(False, "a bool")
        folder: Optional[Path] = option(None, "a path or none")
        mode: Literal["fast", "exact"] = option("exact", "a choice")
        names: tuple[str, ...] = option((), "comma-separated")
        label: str = option("x", "free text")

    typed = read_options(Example, {"count": "3", "ratio": "0.25", "on": "yes", "folder": str(tmp_path),
                                   "mode": "FAST", "names": "a, b,", "label": 7}, "example")
    assert typed == Example(3, 0.25, True, tmp_path, "fast", ("a", "b"), "7")
    assert read_options(Example, options_to_json(typed), "example") == typed  # the manifest round trip
    assert read_options(Example, {"folder": "none", "on": False}, "example") == Example()
    for raw, message in (({"count": "2.5"}, "count='2.5' is not an integer — write e.g. --option count=1"),
                         ({"count": 2.5}, "count=2.5 is not an integer"),
                         ({"ratio": "half"}, "ratio='half' is not a number — write e.g. --option ratio=0.5"),
                         ({"on": "maybe"}, "on='maybe' is not true/false — write e.g. --option on=false"),
                         ({"mode": "quick"}, "mode='quick' is not one of fast, exact"),
                         ({"cuont": "1"}, "cuont is not an option of example — did you mean count?"),
                         ({"zzz": "1"}, "use one of count, folder, label, mode, names, on, ratio")):
        with pytest.raises(InputError) as err:
            read_options(Example, raw, "example")
        assert message in str(err.value) and "\n" not in str(err.value)

    # what an artifact records is input: a bad record is refused as the artifact's fault, not the user's
    tvm = get_backend("tvm")
    manifest = Manifest.__new__(Manifest)
    for bad in ({"default_schedule": "lots"}, ["not", "an", "object"]):
        manifest.payload = {"options": bad}
        with pytest.raises(ArtifactError, match="artifact manifest"):
            tvm.recorded_options(manifest)
    manifest.payload = {}
    assert tvm.recorded_options(manifest) == tvm.parse_options({})  # an artifact from before typed options


def test_the_interfaces_defaults_add_nothing(tmp_path: Path) -> None:
    from edgevision.backends import get_backend
    from edgevision.errors import InputError
    from edgevision.remote import RemoteDevice

    ort = get_backend("onnxruntime")
    assert get_backend("tensorrt").conformance_runner() is None and not get_backend("tensorrt").has_conformance_runner
    assert ort.runtime_info(object()) == {} and ort.executed_precision(object()) is None
    assert ort.remote_timing is None and ort.compiler_modules == ()
    with pytest.raises(InputError, match="cannot be timed on a remote board"):
        ort.time_remote(tmp_path / "a.evpkg", RemoteDevice("127.0.0.1", 9))
