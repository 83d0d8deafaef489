"""Structure the code keeps: small functions, one way into the network, a short ``api.run``."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "psyling"
RUNNER = PACKAGE / "models" / "forward.py"
MAX_LINES = 80
FORWARD_KEYWORDS = {"input_ids", "inputs_embeds"}


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node, node.end_lineno - node.lineno + 1  # the def line to the last line: decorators excluded


def _sources():
    return sorted(PACKAGE.rglob("*.py"))


def _last_name(node: ast.AST) -> str:
    return node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""


def _calls_forward(call: ast.Call) -> bool:
    """``x.model(...)``, ``model(input_ids=...)`` / ``model(inputs_embeds=...)`` or ``<...model>.forward(...)``."""
    func = call.func
    if isinstance(func, ast.Attribute) and func.attr == "model":
        return True
    if isinstance(func, ast.Name) and func.id == "model":
        return bool(FORWARD_KEYWORDS & {k.arg for k in call.keywords})
    return isinstance(func, ast.Attribute) and func.attr == "forward" and _last_name(func.value) == "model"


def test_no_function_is_longer_than_80_lines():
    long = [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({n} lines)"
            for path in _sources() for node, n in _functions(path) if n > MAX_LINES]
    assert long == [], "functions over 80 lines: " + "; ".join(long)


def test_only_the_forward_runner_calls_a_model():
    callers = [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}" for path in _sources() if path != RUNNER
               for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
               if isinstance(node, ast.Call) and _calls_forward(node)]
    assert callers == [], "model forward calls outside psyling/models/forward.py: " + ", ".join(callers)


def test_the_detector_sees_forward_calls():
    found = [_calls_forward(node) for node in ast.walk(ast.parse(
        "lm.model(ids)\nmodel(input_ids=x)\nself.model.forward(x)\nmodel(x)\nmodel.eval()\nrun(model=m)"))
        if isinstance(node, ast.Call)]
    assert found == [True, True, True, False, False, False]


def test_api_run_is_at_most_60_lines():
    lengths = {node.name: n for node, n in _functions(PACKAGE / "api.py")}
    assert lengths["run"] <= 60, f"api.run is {lengths['run']} lines"
