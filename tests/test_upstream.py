"""The adapters in axolotl_ipo/upstream/ on the installed release: every upstream name each one
lists in REQUIRED exists (no skip: a release that moved one fails here, naming it), each lists
every upstream name it imports, and no other module imports an upstream internal."""

import ast
import importlib
from pathlib import Path

import pytest

from axolotl_ipo import upstream
from axolotl_ipo.pairs.sampler import vllm_backend
from axolotl_ipo.upstream import accelerate as upstream_accelerate
from axolotl_ipo.upstream import axolotl as upstream_axolotl
from axolotl_ipo.upstream import transformers as upstream_transformers
from axolotl_ipo.upstream import trl as upstream_trl

PACKAGE = Path(upstream.__file__).parents[1]
ADAPTERS = {
    "accelerate": upstream_accelerate,
    "axolotl": upstream_axolotl,
    "transformers": upstream_transformers,
    "trl": upstream_trl,
}
UPSTREAMS = {"axolotl", "trl", "transformers", "vllm", "accelerate", "peft", "datasets"}
ADAPTER_FILES = {Path(m.__file__) for m in ADAPTERS.values()} | {Path(vllm_backend.__file__)}


def resolve(path: str):
    """"module:attr.attr" (or a module alone) on the installed packages; a pydantic or dataclass
    field counts as an attribute of its class."""
    module_name, _, attributes = path.partition(":")
    found = importlib.import_module(module_name)
    for name in filter(None, attributes.split(".")):
        fields = getattr(found, "model_fields", None) or getattr(found, "__dataclass_fields__", {})
        if hasattr(found, name):
            found = getattr(found, name)
        elif name in fields:
            found = fields[name]
        else:
            raise AttributeError(f"{path}: no {name!r} on {found!r}")
    return found


REQUIRED = [(name, path) for name, module in ADAPTERS.items() for path in module.REQUIRED]


@pytest.mark.parametrize(("upstream_name", "path"), REQUIRED, ids=[p for _, p in REQUIRED])
def test_every_required_upstream_name_exists_on_the_installed_release(upstream_name, path):
    from importlib.metadata import version

    try:
        resolve(path)
    except (ImportError, AttributeError) as err:
        pytest.fail(
            f"{path} (axolotl_ipo/upstream/{upstream_name}.py REQUIRED) is missing from "
            f"{upstream_name} {version(upstream_name)}: {err}; update that adapter."
        )


def test_the_installed_axolotl_is_a_supported_release():
    releases = upstream_axolotl.supported_releases()
    assert upstream_axolotl.axolotl_version() in releases, (
        f"axolotl {upstream_axolotl.axolotl_version()} is not in releases.txt {releases}"
    )
    assert upstream_axolotl.check_installed_release() == upstream_axolotl.axolotl_version()


@pytest.mark.parametrize(("installed", "supported"), [
    ("0.18.3", False), ("0.19.0", True), ("0.20.1", True), ("0.21.2.dev0", True),
    ("0.22.0", False), ("1.0.0", False),
])
def test_check_installed_release_accepts_the_listed_minors_only(monkeypatch, installed, supported):
    monkeypatch.setattr(upstream_axolotl, "axolotl_version", lambda: installed)
    monkeypatch.setattr(upstream_axolotl, "supported_releases", lambda: ("0.19.0", "0.21.0"))
    if supported:
        assert upstream_axolotl.check_installed_release() == installed
    else:
        with pytest.raises(RuntimeError, match=rf"axolotl {installed} is installed; .*between "
                           r"0\.19 and 0\.21 \(axolotl_ipo/upstream/releases\.txt\)"):
            upstream_axolotl.check_installed_release()


@pytest.mark.skipif(not vllm_backend.vllm_available(), reason="vLLM (an optional extra) is not "
                    "installed; its names are checked where it is")
@pytest.mark.parametrize("path", vllm_backend.REQUIRED)
def test_every_vllm_name_exists_where_vllm_is_installed(path):
    resolve(path)


def upstream_imports(source: Path) -> list[tuple[str, str | None, int]]:
    """(module, imported name or None for `import module`, line) for every import of an
    upstream library in ``source``, wherever it sits (module level or inside a function)."""
    found = []
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.module, a.name, node.lineno) for a in node.names]
    return [item for item in found if item[0].split(".")[0] in UPSTREAMS]


def test_modules_outside_the_adapters_import_only_public_upstream_names():
    leaks = [
        f"{source.relative_to(PACKAGE.parent)}:{line}: {module}{':' + name if name else ''}"
        for source in sorted(PACKAGE.rglob("*.py"))
        if source not in ADAPTER_FILES
        for module, name, line in upstream_imports(source)
        if f"{module}:{name}" not in upstream.PUBLIC
    ]
    assert not leaks, f"upstream internals outside axolotl_ipo/upstream/: {leaks}"


@pytest.mark.parametrize("adapter", [*ADAPTERS.values(), vllm_backend], ids=lambda m: m.__name__)
def test_each_adapter_lists_every_upstream_name_it_imports(adapter):
    listed = set(adapter.REQUIRED)

    def is_listed(module: str, name: str | None) -> bool:
        names = [module] if name is None else [f"{module}:{name}", f"{module}.{name}"]
        return any(entry == n or entry.startswith(n + ":") for n in names for entry in listed)

    unlisted = [
        f"line {line}: {module}{':' + name if name else ''}"
        for module, name, line in upstream_imports(Path(adapter.__file__))
        if not is_listed(module, name) and f"{module}:{name}" not in upstream.PUBLIC
    ]
    assert not unlisted, f"{adapter.__name__} imports names its REQUIRED does not list: {unlisted}"


@pytest.mark.parametrize("seeds_itself", [False, True])
def test_the_lora_init_is_seeded_where_axolotl_does_not_seed_it(monkeypatch, seeds_itself):
    import torch

    monkeypatch.setattr(upstream_axolotl, "seeds_lora_init", lambda: seeds_itself)
    expected = torch.manual_seed(5) and torch.rand(3)
    torch.manual_seed(123)
    upstream_axolotl.seed_lora_init({"seed": 5})
    assert torch.equal(torch.rand(3), expected) is not seeds_itself
    torch.manual_seed(123)
    unseeded = torch.rand(3)
    torch.manual_seed(123)
    upstream_axolotl.seed_lora_init({"seed": None})  # no seed: nothing to fix
    assert torch.equal(torch.rand(3), unseeded)


def test_the_installed_release_is_probed_for_its_own_lora_seeding():
    from importlib.metadata import version

    minor = tuple(int(part) for part in version("axolotl").split(".")[:2])
    assert upstream_axolotl.seeds_lora_init() is (minor >= (0, 21))


def test_the_package_imports_nothing_from_research_or_benchmarks():
    """The studies (research/) and the benchmarks are fenced off: the package runs without them."""
    repo = PACKAGE.parent
    scripts = {p.stem for folder in ("research", "benchmarks")
               for p in (repo / folder).rglob("*.py")}
    fenced = {"research", "benchmarks"} | scripts
    found = []
    for source in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            found += [f"{source.name}: {n}" for n in names if n.split(".")[0] in fenced]
    assert not found, f"the package imports research or benchmark code: {found}"
