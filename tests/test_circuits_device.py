"""Every tensor that circuits/ creates next to the model's tensors is created on the model's device.

A static check (the tests run on the CPU only): each call of a torch factory function
(``torch.arange``, ``torch.zeros``, ``torch.full``, ``torch.eye``, ...) in ``circuits/`` must pass
``device=``, unless it sits in a function listed below, whose tensors stay on the CPU by design
(seeded probes drawn with a CPU generator and then moved, results gathered on the CPU, the
Fourier analysis of outputs already moved to the CPU).
"""

from __future__ import annotations

import ast
from pathlib import Path

FACTORIES = {
    "arange", "zeros", "ones", "full", "empty", "eye", "tensor", "as_tensor", "randn", "rand",
    "randint", "randperm", "linspace",
}
#: (module, function): CPU tensors by design, and why.
CPU_BY_DESIGN = {
    ("probes.py", "_candidates"): "candidate ids, indexed on the CPU; the probe is moved at the end",
    ("probes.py", "repeated_tokens"): "drawn with a CPU generator (same probe on every device), then moved",
    ("_fourier_analysis.py", "fourier_basis"): "the analysis runs on outputs moved to the CPU",
    ("_fourier_analysis.py", "neuron_block_fractions"): "works on activations it moves to the CPU",
    ("_measures.py", None): "CPU measures of CPU tables",
    ("_modadd.py", "pair_operands"): "CPU inputs; moved by the caller that runs the model",
    ("progress.py", "_check_mask"): "a mask of the CPU loss table",
    ("ablation.py", "_ablated_losses"): "the result table, filled with .cpu() values",
    ("causal_tracing.py", "_read_positions"): "moved to the tokens' device by the caller",
    ("linear_probe.py", "_read_positions"): "moved to the tokens' device by the caller",
    ("composition.py", "rand"): "drawn with a CPU generator (same baseline on every device), then moved",
    ("composition.py", "_baseline"): "(the enclosing function of rand)",
    ("composition.py", "composition_scores"): "layer and head indices of the CPU result frame",
    ("progress.py", "progress_measures"): "an empty stand-in read only for its device",
}


def _offending_calls() -> list[str]:
    root = Path(__file__).resolve().parents[1] / "circuits"
    found = []
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            for call in ast.walk(func):
                if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)):
                    continue
                target = call.func
                if not (isinstance(target.value, ast.Name) and target.value.id == "torch" and target.attr in FACTORIES):
                    continue
                if any(k.arg == "device" for k in call.keywords):
                    continue
                if (path.name, func.name) in CPU_BY_DESIGN or (path.name, None) in CPU_BY_DESIGN:
                    continue
                found.append(f"{path.name}:{call.lineno} in {func.name}: torch.{target.attr} without device=")
    return sorted(set(found))


def test_factory_calls_follow_the_model_device():
    assert _offending_calls() == []
