"""The package's shape holds: private Keras use only in keras_compat, no import cycle, modules of one job."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "cnnlab"
COMPAT = PACKAGE / "runtime" / "keras_compat.py"
MAX_LINES = 450
STDLIB_BASES = {"os", "sys"}  # os._exit: the standard library's documented underscore names


def modules():
    return sorted(PACKAGE.rglob("*.py"))


def own_private_names(tree):
    """The _names a module defines for itself (its functions, and attributes its classes set on self)."""
    names = {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
    return names


def private_uses(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = own_private_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if ast.unparse(node.value) in STDLIB_BASES:
                continue
            if node.attr not in own or isinstance(node.ctx, ast.Store) and ast.unparse(node.value) != "self":
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {ast.unparse(node)}")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [alias.name for alias in node.names]
            found += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: import {name}" for name in names if name.startswith("keras.src")]
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "keras.src" in node.value and "\n" not in node.value:
            found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value!r}")
    return found


def test_private_keras_parts_are_used_only_in_keras_compat():
    found = [use for path in modules() if path != COMPAT for use in private_uses(path)]
    assert found == [], "private attributes or keras.src outside cnnlab/runtime/keras_compat.py:\n" + "\n".join(found)


def test_the_private_use_check_finds_one():
    """The check above can fail: a private attribute of a Keras object, assigned or read, is found."""
    sample = PACKAGE.parent / "tests" / "_sample_private_use.py"
    sample.write_text("def f(callback):\n    callback._global_train_batch = 3\n    return callback._writers\n")
    try:
        assert len(private_uses(sample)) == 2
    finally:
        sample.unlink()


def test_no_module_has_two_jobs_by_its_length():
    long = {str(path.relative_to(PACKAGE.parent)): n for path in modules()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}, f"modules over {MAX_LINES} lines (split them by job): {long}"


def test_at_most_five_modules_at_the_top():
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top) <= 5, top


def imports_of(path):
    """The cnnlab modules a module imports, at any depth of its code (function-level imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cnnlab"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if module_path(candidate) else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("cnnlab")}
    return {name for name in found if module_path(name)}


def module_path(name):
    base = PACKAGE.parent.joinpath(*name.split("."))
    return base.with_suffix(".py") if base.with_suffix(".py").exists() else base / "__init__.py" if (base / "__init__.py").exists() else None


def test_no_import_cycle_between_modules():
    graph = {}
    for path in modules():
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        # the package itself imports the API only lazily (cnnlab.__getattr__): no edge, or every module importing
        # cnnlab.__version__ would close a cycle through it
        graph[name] = {dep for dep in imports_of(path) if dep not in (name, "cnnlab")}
    cycles = []

    def visit(node, stack, seen):
        for dep in graph.get(node, ()):
            if dep in stack:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in seen:
                seen.add(dep)
                visit(dep, stack + [dep], seen)

    for start in graph:
        visit(start, [start], {start})
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:5])


def top_level_names(path):
    """What `from module import NAME` can take from a module: what its top level defines, assigns or imports."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def test_every_import_of_cnnlab_names_a_module_that_exists():
    """Function-level imports too, and each name imported from a module: a function moved without its callers is
    found here, not by the user who reaches that line."""
    missing = []
    for path in [*modules(), *PACKAGE.parent.joinpath("tests").glob("*.py"), *PACKAGE.parent.joinpath("bench").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("cnnlab"):
                if module_path(node.module) is None:
                    missing.append(f"{path.name}:{node.lineno}: {node.module}")
                else:
                    defined = top_level_names(module_path(node.module))
                    missing += [f"{path.name}:{node.lineno}: {node.module}.{alias.name}" for alias in node.names
                                if alias.name not in defined and not module_path(f"{node.module}.{alias.name}")
                                and node.module != "cnnlab"]
            elif isinstance(node, ast.Import):
                missing += [f"{path.name}:{node.lineno}: {alias.name}" for alias in node.names
                            if alias.name.startswith("cnnlab") and module_path(alias.name) is None]
    assert missing == [], missing
