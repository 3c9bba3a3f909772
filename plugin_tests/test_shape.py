"""The packages keep the shape issue #14 gave them (read statically with `ast`; no server).

Rules, over girder_resolver, feder8 and datadns:
- no import cycle among their modules;
- no import inside a function or method body (that is how a cycle gets dodged);
- no `_private` name of one project module used by another (plugin_tests/ may);
- layers: launcher/ is Girder-free and knows nothing of girder_resolver outside it but
  primitives and errors; models/ know neither services/ nor rest/; services/ do not know
  rest/; feder8 never imports the plugin;
- every module opens with a docstring saying what it owns.

What counts as an import of what: `import a.b.c` imports module a.b.c; `from p import n`
imports submodule p.n when there is one, else p itself (its __init__ for a package); relative
imports are resolved against the importing module's package. The parent packages that Python
also initializes on the way are not counted: they would put every package's __init__ in a
cycle with the modules it wires.

Each rule is shown able to fail on a small tree written to tmp_path, then run on the real one.
"""

import ast
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ('girder_resolver', 'feder8', 'datadns')
# The methods and attributes a namedtuple offers under an underscore are its public API.
NAMEDTUPLE_API = {'_asdict', '_field_defaults', '_fields', '_make', '_replace'}

CYCLE_FIX = (
    'break it: move what both sides need down a layer (to primitives, errors or the model), or '
    'let the lower module be told what it needs (an argument or a callback wired in load())'
)
INLINE_FIX = (
    'move the import to the top of the module; if that makes a cycle, break the cycle instead '
    '(an import in a function only hides it)'
)
PRIVATE_FIX = (
    'make the name public in its own module (drop the underscore, document it) or move the '
    'code that needs it into that module'
)
DOCSTRING_FIX = 'open the module with a docstring saying what it owns'


@dataclass(frozen=True)
class Import:
    """One name a module imports: `target` is the dotted module, `name` what it takes from it."""

    source: str
    target: str
    name: str | None
    line: int
    where: str  # 'module' (runs at import time), 'typing' (if TYPE_CHECKING:) or 'function'


@dataclass
class Module:
    name: str
    path: Path
    isPackage: bool
    tree: ast.Module
    imports: list = field(default_factory=list)


def within(name, prefix):
    return name == prefix or name.startswith(prefix + '.')


def isPrivate(name):
    return name.startswith('_') and not (name.startswith('__') and name.endswith('__'))


def collectModules(root, packages=PACKAGES):
    """Every module of `packages` below `root`, by dotted name, with its imports resolved."""
    modules = {}
    for package in packages:
        top = Path(root) / package
        # os.walk does not follow links: the built web client is a link into /work/main.
        for folder, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if d != '__pycache__')
            for fileName in sorted(files):
                if not fileName.endswith('.py'):
                    continue
                path = Path(folder) / fileName
                parts = list(path.relative_to(root).with_suffix('').parts)
                isPackage = parts[-1] == '__init__'
                if isPackage:
                    parts.pop()
                name = '.'.join(parts)
                tree = ast.parse(path.read_text(), filename=str(path))
                modules[name] = Module(name, path, isPackage, tree)
    for module in modules.values():
        module.imports = list(_importsOf(module, modules))
    return modules


def _isTypeChecking(test):
    return (isinstance(test, ast.Name) and test.id == 'TYPE_CHECKING') or (
        isinstance(test, ast.Attribute) and test.attr == 'TYPE_CHECKING'
    )


def _statements(tree):
    """(node, where) for every node, where is 'module', 'typing' or 'function'."""

    def visit(node, where):
        for child in ast.iter_child_nodes(node):
            inner = where
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                inner = 'function'
            yield child, where
            if (
                isinstance(child, ast.If)
                and where == 'module'
                and node is tree
                and _isTypeChecking(child.test)
            ):
                for stmt in child.body:
                    yield stmt, 'typing'
                    yield from visit(stmt, 'typing')
                for stmt in child.orelse:
                    yield stmt, 'module'
                    yield from visit(stmt, 'module')
                continue
            yield from visit(child, inner)

    yield from visit(tree, 'module')


def _relativeBase(module, level, dotted):
    package = module.name.split('.') if module.isPackage else module.name.split('.')[:-1]
    if level - 1 > len(package) - 1:
        return None  # beyond the top-level package
    base = package[: len(package) - (level - 1)]
    return '.'.join(base + (dotted.split('.') if dotted else []))


def resolveFrom(module, node, modules):
    """(target, name, local name) for each name of a `from ... import` statement."""
    if node.level:
        base = _relativeBase(module, node.level, node.module)
        if base is None:
            return []
    else:
        base = node.module
    resolved = []
    for alias in node.names:
        sub = f'{base}.{alias.name}'
        local = alias.asname or alias.name
        if sub in modules:
            resolved.append((sub, None, local))
        else:
            resolved.append((base, alias.name, local))
    return resolved


def _importsOf(module, modules):
    for node, where in _statements(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = alias.name
                # `import a.b.c` with a.b.c not a module of ours: count the deepest that is.
                parts = target.split('.')
                while len(parts) > 1 and '.'.join(parts) not in modules:
                    parts.pop()
                if '.'.join(parts) in modules:
                    target = '.'.join(parts)
                yield Import(module.name, target, None, node.lineno, where)
        elif isinstance(node, ast.ImportFrom):
            for target, name, _ in resolveFrom(module, node, modules):
                yield Import(module.name, target, name, node.lineno, where)


def rel(module, root):
    return module.path.relative_to(root).as_posix()


def checkCycles(modules, root):
    """Every import cycle among the modules.

    An import inside a function counts too (it is a dependency all the same, only deferred);
    one under `if TYPE_CHECKING:` does not (it never runs).
    """
    graph = {name: {} for name in modules}
    for module in modules.values():
        for imp in module.imports:
            if imp.where != 'typing' and imp.target in modules and imp.target != module.name:
                # One edge a pair: the first import, one at module level before any other.
                known = graph[module.name].get(imp.target)
                if known is None or (known[1] and imp.where == 'module'):
                    graph[module.name][imp.target] = (imp.line, imp.where == 'function')
    # Tarjan's strongly connected components.
    index, low, onStack, stack, components = {}, {}, set(), [], []

    def connect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        onStack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in onStack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                onStack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    problems = []
    for component in sorted(components):
        members = set(component)
        start = component[0]
        # The shortest cycle through `start`, inside the component.
        previous, queue = {start: None}, deque([start])
        end = None
        while queue and end is None:
            v = queue.popleft()
            for w in sorted(graph[v]):
                if w == start:
                    end = v
                    break
                if w in members and w not in previous:
                    previous[w] = v
                    queue.append(w)
        path = [end]
        while path[-1] != start:
            path.append(previous[path[-1]])
        path.reverse()
        edges = list(zip(path, path[1:] + [start], strict=True))
        steps = [
            f'    {rel(modules[a], root)}:{graph[a][b][0]} imports {b}'
            + (' (inside a function)' if graph[a][b][1] else '')
            for a, b in edges
        ]
        # The rest of the tangle, so that one fix does not just reveal the next cycle.
        rest = [
            f'      {rel(modules[a], root)}:{graph[a][b][0]} imports {b}'
            + (' (inside a function)' if graph[a][b][1] else '')
            for a in component
            for b in sorted(graph[a], key=lambda b, a=a: graph[a][b][0])
            if b in members and (a, b) not in edges
        ]
        also = '\n    other imports inside the tangle:\n' + '\n'.join(rest) if rest else ''
        problems.append(
            f'{rel(modules[start], root)}:{graph[start][edges[0][1]][0]}: '
            f'[cycle] {" -> ".join(path + [start])}\n'
            + '\n'.join(steps)
            + also
            + f'\n    {CYCLE_FIX}'
        )
    return problems


def checkInlineImports(modules, root):
    """Every import statement (or importlib call) inside a function or method body."""
    problems = []
    for module in modules.values():
        for node, where in _statements(module.tree):
            if where != 'function':
                continue
            if isinstance(node, ast.Import | ast.ImportFrom):
                what = ast.unparse(node)
            elif isinstance(node, ast.Call) and (
                (isinstance(node.func, ast.Name) and node.func.id == '__import__')
                or (isinstance(node.func, ast.Attribute) and node.func.attr == 'import_module')
            ):
                what = ast.unparse(node)
            else:
                continue
            problems.append(
                f'{rel(module, root)}:{node.lineno}: [import in function] `{what}` -- {INLINE_FIX}'
            )
    return problems


def _bindings(module, modules):
    """Local name -> ('module', dotted) or ('member', dotted module, name) for project imports."""
    bound = {}
    for node, _ in _statements(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    if alias.name in modules:
                        bound[alias.asname] = ('module', alias.name)
                else:
                    top = alias.name.split('.')[0]
                    if top in modules:
                        bound[top] = ('module', top)
        elif isinstance(node, ast.ImportFrom):
            for target, name, local in resolveFrom(module, node, modules):
                if target not in modules or name == '*':
                    continue
                bound[local] = ('module', target) if name is None else ('member', target, name)
    return bound


def _moduleOf(expr, bound, modules):
    """The project module an expression like `a.b.c` names, or None."""
    if isinstance(expr, ast.Name):
        binding = bound.get(expr.id)
        return binding[1] if binding and binding[0] == 'module' else None
    if isinstance(expr, ast.Attribute):
        parent = _moduleOf(expr.value, bound, modules)
        if parent and f'{parent}.{expr.attr}' in modules:
            return f'{parent}.{expr.attr}'
    return None


def _scopes(tree):
    """The nodes of the module and of each function, a nested function's body not included."""

    def own(node):
        for child in ast.iter_child_nodes(node):
            yield child
            if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield from own(child)

    yield list(own(tree))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield list(own(node))


def checkPrivateNames(modules, root):
    """Every `_private` name one project module takes from another."""
    problems = []
    for module in modules.values():
        where = rel(module, root)
        for imp in module.imports:
            if imp.target in modules and imp.target != module.name:
                taken = imp.name if imp.name is not None else imp.target.rsplit('.', 1)[-1]
                if isPrivate(taken) and imp.name != '*':
                    problems.append(
                        f'{where}:{imp.line}: [private name] imports {taken} from '
                        f'{imp.target if imp.name else imp.target.rsplit(".", 1)[0]} -- '
                        f'{PRIVATE_FIX}'
                    )
        bound = _bindings(module, modules)
        for scope in _scopes(module.tree):
            # `model = Notebook()` makes `model._set` a reach into Notebook too.
            instances = {
                node.targets[0].id: node.value.func.id
                for node in scope
                if isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name)
            }
            for node in scope:
                if not (isinstance(node, ast.Attribute) and isPrivate(node.attr)):
                    continue
                owner = _moduleOf(node.value, bound, modules)
                if owner and owner != module.name:
                    problems.append(
                        f'{where}:{node.lineno}: [private name] `{ast.unparse(node)}` reaches '
                        f'into {owner} -- {PRIVATE_FIX}'
                    )
                    continue
                # Notebook._set, Notebook()._set or model._set: a private member of a class
                # imported from another project module.
                value = node.value.func if isinstance(node.value, ast.Call) else node.value
                if not isinstance(value, ast.Name) or node.attr in NAMEDTUPLE_API:
                    continue
                binding = bound.get(instances.get(value.id, value.id))
                if binding and binding[0] == 'member' and binding[1] != module.name:
                    problems.append(
                        f'{where}:{node.lineno}: [private name] `{ast.unparse(node)}` reaches '
                        f'into {binding[2]} of {binding[1]} -- {PRIVATE_FIX}'
                    )
    return problems


def _layerRule(source, target):
    """Why `source` may not import `target`, or None."""
    top = target.split('.')[0]
    if within(source, 'girder_resolver.launcher'):
        if top == 'girder':
            return 'launcher/ is Girder-free: it imports nothing from girder'
        if (
            within(target, 'girder_resolver')
            and not within(target, 'girder_resolver.launcher')
            and target not in ('girder_resolver.primitives', 'girder_resolver.errors')
        ):
            return (
                'launcher/ knows nothing of girder_resolver outside it but primitives and '
                'errors: pass what it needs in (arguments, the launcher interface)'
            )
    if within(source, 'girder_resolver.models'):
        for upper in ('girder_resolver.services', 'girder_resolver.rest'):
            if within(target, upper):
                return (
                    f'models/ never import {upper.rsplit(".", 1)[1]}/: move the code that needs '
                    'both into services/, or have the service call the model'
                )
    if within(source, 'girder_resolver.services') and within(target, 'girder_resolver.rest'):
        return 'services/ never import rest/: REST calls services, not the other way round'
    if within(source, 'feder8') and top == 'girder_resolver':
        return 'feder8 talks to Girder only over HTTP (girder-client): it never imports the plugin'
    return None


def checkLayers(modules, root):
    """Every import (wherever it stands) that points against the layering."""
    problems = []
    for module in modules.values():
        for imp in module.imports:
            reason = _layerRule(module.name, imp.target)
            if reason:
                what = imp.target + (f' ({imp.name})' if imp.name else '')
                problems.append(
                    f'{rel(module, root)}:{imp.line}: [layers] {module.name} imports {what} -- '
                    f'{reason}'
                )
    return problems


def checkDocstrings(modules, root, packages=PACKAGES):
    """Every module of `packages` that does not open with a docstring."""
    return [
        f'{rel(module, root)}:1: [docstring] {module.name} has none -- {DOCSTRING_FIX}'
        for module in modules.values()
        if any(within(module.name, p) for p in packages)
        and not (ast.get_docstring(module.tree) or '').strip()
    ]


CHECKS = [checkCycles, checkInlineImports, checkPrivateNames, checkLayers, checkDocstrings]


def writeTree(root, files):
    for relPath, text in files.items():
        path = root / relPath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def checkTree(root, files, check, packages=('girder_resolver',)):
    writeTree(root, files)
    return check(collectModules(root, packages), root)


# --- The checker resolves imports the way Python does -----------------------------------------


def testRelativeImportsResolveToTheModuleTheyName(tmp_path):
    writeTree(
        tmp_path,
        {
            'girder_resolver/__init__.py': '"""P."""\nVERSION = 1\n',
            'girder_resolver/settings.py': '"""S."""\n',
            'girder_resolver/models/__init__.py': '"""M."""\nfrom . import site\n',
            'girder_resolver/models/site.py': '"""Site."""\nfrom .. import settings\n',
            'girder_resolver/rest/__init__.py': '"""R."""\n',
            'girder_resolver/rest/site.py': (
                '"""R."""\nfrom ..models.site import Site\nfrom .. import VERSION\n'
                'import girder_resolver.models\nfrom girder_resolver import settings as s\n'
                'import json\n'
            ),
        },
    )
    modules = collectModules(tmp_path, ('girder_resolver',))
    targets = {
        name: [(i.target, i.name) for i in m.imports] for name, m in modules.items() if m.imports
    }
    assert targets == {
        'girder_resolver.models': [('girder_resolver.models.site', None)],
        'girder_resolver.models.site': [('girder_resolver.settings', None)],
        'girder_resolver.rest.site': [
            ('girder_resolver.models.site', 'Site'),
            ('girder_resolver', 'VERSION'),
            ('girder_resolver.models', None),
            ('girder_resolver.settings', None),
            ('json', None),
        ],
    }


# --- Each rule can fail --------------------------------------------------------------------------


def testTwoModulesImportingEachOtherAreACycle(tmp_path):
    problems = checkTree(
        tmp_path,
        {
            'girder_resolver/__init__.py': '"""P."""\n',
            'girder_resolver/pool.py': '"""Pool."""\nfrom .culler import cull\n',
            'girder_resolver/culler.py': '"""Culler."""\nimport json\nfrom . import pool\n',
            'girder_resolver/metrics.py': '"""Metrics."""\nfrom .pool import Pool\n',
        },
        checkCycles,
    )
    assert len(problems) == 1, problems
    assert 'girder_resolver.culler -> girder_resolver.pool -> girder_resolver.culler' in problems[0]
    assert 'girder_resolver/culler.py:3 imports girder_resolver.pool' in problems[0]
    assert 'girder_resolver/pool.py:2 imports girder_resolver.culler' in problems[0]
    assert 'metrics' not in problems[0]
    assert 'break it' in problems[0]


def testACycleThroughAPackageInitIsACycle(tmp_path):
    # `from . import name` where name is not a submodule imports the package's __init__.
    problems = checkTree(
        tmp_path,
        {
            'feder8/__init__.py': '"""P."""\nfrom .sidecar import Sidecar\nDEFAULT = 1\n',
            'feder8/sidecar.py': '"""S."""\nfrom . import DEFAULT\n',
        },
        checkCycles,
        packages=('feder8',),
    )
    assert len(problems) == 1 and 'feder8/sidecar.py:2 imports feder8' in problems[0], problems


def testACycleDodgedByAnImportInAFunctionIsStillACycle(tmp_path):
    problems = checkTree(
        tmp_path,
        {
            'girder_resolver/__init__.py': '"""P."""\n',
            'girder_resolver/a.py': '"""A."""\nfrom . import b\n',
            'girder_resolver/b.py': '"""B."""\n\ndef f():\n    from .a import g\n',
        },
        checkCycles,
    )
    assert len(problems) == 1, problems
    assert 'girder_resolver/b.py:4 imports girder_resolver.a (inside a function)' in problems[0]


def testTypeCheckingImportsAndOneWayImportsAreNoCycle(tmp_path):
    problems = checkTree(
        tmp_path,
        {
            'girder_resolver/__init__.py': '"""P."""\n',
            'girder_resolver/a.py': '"""A."""\nfrom . import b\n',
            'girder_resolver/b.py': (
                '"""B."""\nfrom typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n'
                '    from . import a\n'
            ),
        },
        checkCycles,
    )
    assert problems == []


def testAnImportInAFunctionIsReported(tmp_path):
    files = {
        'girder_resolver/__init__.py': '"""P."""\n',
        'girder_resolver/pool.py': (
            '"""Pool."""\nimport json\nfrom typing import TYPE_CHECKING\n\n'
            'if TYPE_CHECKING:\n    from .culler import Culler\n\n'
            'def claim():\n    from .culler import cull\n    return cull()\n\n'
            'class Pool:\n    def fill(self):\n        import importlib\n'
            "        return importlib.import_module('girder_resolver.culler')\n"
        ),
        'girder_resolver/culler.py': '"""Culler."""\n',
    }
    problems = checkTree(tmp_path, files, checkInlineImports)
    assert [p.split(' -- ')[0] for p in problems] == [
        'girder_resolver/pool.py:9: [import in function] `from .culler import cull`',
        'girder_resolver/pool.py:14: [import in function] `import importlib`',
        'girder_resolver/pool.py:15: [import in function] '
        "`importlib.import_module('girder_resolver.culler')`",
    ]
    assert 'move the import to the top' in problems[0]


def testAPrivateNameTakenFromAnotherModuleIsReported(tmp_path):
    files = {
        'girder_resolver/__init__.py': '"""P."""\n',
        'girder_resolver/models/__init__.py': '"""M."""\n',
        'girder_resolver/models/notebook.py': (
            '"""N."""\n_aware = None\n\nclass Notebook:\n    def _set(self):\n'
            '        return self._x\n\ndef _helper():\n    return _aware\n'
        ),
        'girder_resolver/culler.py': (
            '"""C."""\nfrom .models.notebook import Notebook, _aware\n'
            'from .models import notebook\nimport girder_resolver.models.notebook as nb\n'
            'import girder_resolver.models.notebook\n\n'
            'def cull():\n    Notebook()._set()\n    notebook._helper()\n    nb._helper()\n'
            '    girder_resolver.models.notebook._helper()\n    model = Notebook()\n'
            '    model._set()\n    return Notebook.__name__\n\n'
            'def other(model):\n    return model._set()\n'
        ),
    }
    problems = checkTree(tmp_path, files, checkPrivateNames)
    assert [p.split(' -- ')[0] for p in problems] == [
        'girder_resolver/culler.py:2: [private name] imports _aware from '
        'girder_resolver.models.notebook',
        'girder_resolver/culler.py:8: [private name] `Notebook()._set` reaches into Notebook of '
        'girder_resolver.models.notebook',
        'girder_resolver/culler.py:9: [private name] `notebook._helper` reaches into '
        'girder_resolver.models.notebook',
        'girder_resolver/culler.py:10: [private name] `nb._helper` reaches into '
        'girder_resolver.models.notebook',
        'girder_resolver/culler.py:11: [private name] `girder_resolver.models.notebook._helper` '
        'reaches into girder_resolver.models.notebook',
        'girder_resolver/culler.py:13: [private name] `model._set` reaches into Notebook of '
        'girder_resolver.models.notebook',
    ]
    assert 'make the name public' in problems[0]


def testLayersPointOneWay(tmp_path):
    files = {
        'girder_resolver/__init__.py': '"""P."""\n',
        'girder_resolver/errors.py': '"""E."""\n',
        'girder_resolver/primitives.py': '"""P."""\n',
        'girder_resolver/settings.py': '"""S."""\n',
        'girder_resolver/launcher/__init__.py': '"""L."""\n',
        'girder_resolver/launcher/base.py': (
            '"""B."""\nfrom girder.models.setting import Setting\nfrom .. import settings\n'
            'from .. import errors, primitives\nfrom . import process\n'
        ),
        'girder_resolver/launcher/process.py': '"""P."""\n',
        'girder_resolver/models/__init__.py': '"""M."""\n',
        'girder_resolver/models/site.py': (
            '"""S."""\nfrom girder.models.model_base import Model\n'
            'from ..services.registration import register\n'
        ),
        'girder_resolver/services/__init__.py': '"""S."""\n',
        'girder_resolver/services/registration.py': (
            '"""R."""\nfrom ..models.site import Site\nfrom ..rest import site\n'
        ),
        'girder_resolver/rest/__init__.py': '"""R."""\n',
        'girder_resolver/rest/site.py': '"""R."""\nfrom ..services import registration\n',
        'feder8/__init__.py': '"""F."""\n',
        'feder8/sidecar.py': '"""S."""\nimport girder_client\nimport girder_resolver.errors\n',
    }
    problems = checkTree(tmp_path, files, checkLayers, packages=('girder_resolver', 'feder8'))
    assert [p.split(' -- ')[0] for p in problems] == [
        'girder_resolver/launcher/base.py:2: [layers] girder_resolver.launcher.base imports '
        'girder.models.setting (Setting)',
        'girder_resolver/launcher/base.py:3: [layers] girder_resolver.launcher.base imports '
        'girder_resolver.settings',
        'girder_resolver/models/site.py:3: [layers] girder_resolver.models.site imports '
        'girder_resolver.services.registration (register)',
        'girder_resolver/services/registration.py:3: [layers] '
        'girder_resolver.services.registration imports girder_resolver.rest.site',
        'feder8/sidecar.py:3: [layers] feder8.sidecar imports girder_resolver.errors',
    ]


def testAModuleWithoutDocstringIsReported(tmp_path):
    problems = checkTree(
        tmp_path,
        {
            'girder_resolver/__init__.py': '',
            'girder_resolver/pool.py': '# The warm pool.\nimport json\n',
            'girder_resolver/culler.py': '"""Idle and max-age culling."""\n',
        },
        checkDocstrings,
    )
    assert sorted(p.split(' -- ')[0] for p in problems) == [
        'girder_resolver/__init__.py:1: [docstring] girder_resolver has none',
        'girder_resolver/pool.py:1: [docstring] girder_resolver.pool has none',
    ]


# --- The real tree ------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def realModules():
    modules = collectModules(ROOT)
    # A checker that finds no modules, or no imports between them, would pass anything.
    for expected in ('girder_resolver', 'girder_resolver.models.notebook', 'feder8.sidecar'):
        assert expected in modules, sorted(modules)
    assert any(
        i.target in modules and not within(i.target, 'girder_resolver.rest')
        for m in modules.values()
        if within(m.name, 'girder_resolver.rest')
        for i in m.imports
    )
    return modules


@pytest.mark.parametrize('check', CHECKS, ids=[c.__name__ for c in CHECKS])
def testThePackagesKeepTheirShape(realModules, check):
    problems = check(realModules, ROOT)
    assert not problems, f'{len(problems)} problem(s):\n' + '\n'.join(problems)
