"""Exporting any torch nn.Module to ONNX (opset >= 17, dynamic batch) and checking parity with PyTorch.

Uses torch's TorchScript-based exporter (`dynamo=False`): it needs no extra package and handles the
convolutional networks here; torch marks it deprecated in favour of the torch.export-based one,
which needs `onnxscript`. The parity check runs the same inputs through PyTorch and onnxruntime
(CPU) and refuses an export whose fp32 outputs differ by more than 1e-4 anywhere.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import torch

from firmware.inference_stages import make_session
from obscura import atomic
from obscura.errors import ObscuraError

MIN_OPSET = 17
PARITY_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Parity:
    """Largest absolute fp32 difference between PyTorch and onnxruntime, per output, over all batches."""

    max_abs_diff: dict[str, float]
    batches: int

    @property
    def worst(self) -> float:
        """The largest difference of any output."""
        return max(self.max_abs_diff.values())


def export_onnx(
    module,
    example_inputs: Sequence,
    path: str | Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    opset: int = MIN_OPSET,
) -> Path:
    """Export `module` (put in eval mode) with every input and output dynamic in its first (batch) axis."""

    if opset < MIN_OPSET:
        raise ObscuraError(f"ONNX opset {opset}: expected >= {MIN_OPSET}")
    if len(example_inputs) != len(input_names):
        raise ObscuraError(f"export: {len(example_inputs)} example inputs but {len(input_names)} input names")
    module.eval()
    dynamic = {name: {0: "batch"} for name in [*input_names, *output_names]}
    with atomic.atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(
            module,
            tuple(example_inputs),
            str(tmp),
            input_names=list(input_names),
            output_names=list(output_names),
            opset_version=opset,
            dynamic_axes=dynamic,
            dynamo=False,
            do_constant_folding=True,
        )
        _check_exported(tmp, opset, input_names)
    return Path(path)


def _check_exported(path: Path, opset: int, input_names: Sequence[str]) -> None:
    """The file is valid ONNX at the requested opset with a symbolic batch axis on every input."""

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    version = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if version < opset:
        raise ObscuraError(f"export produced opset {version}, expected >= {opset}")
    for graph_input in model.graph.input:
        if graph_input.name in input_names and not graph_input.type.tensor_type.shape.dim[0].dim_param:
            raise ObscuraError(f"export: input {graph_input.name} has a fixed batch size; expected a dynamic one")


def check_parity(
    module, path: str | Path, batches: Sequence[Sequence[np.ndarray]], tolerance: float = PARITY_TOLERANCE
) -> Parity:
    """Run every batch (a tuple of float32 arrays, one per input) through both; raise if any output differs > tolerance."""

    session = make_session(path, ["CPUExecutionProvider"], threads=1)
    input_names = [i.name for i in session.get_inputs()]
    output_names = [o.name for o in session.get_outputs()]
    worst = {name: 0.0 for name in output_names}
    module.eval()
    for batch in batches:
        arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in batch]
        with torch.no_grad():
            expected = module(*[torch.from_numpy(a) for a in arrays])
        expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
        got = session.run(None, dict(zip(input_names, arrays)))
        for name, e, g in zip(output_names, expected, got):
            if tuple(e.shape) != g.shape:
                raise ObscuraError(f"parity: output {name} has shape {g.shape} in ONNX, {tuple(e.shape)} in PyTorch")
            worst[name] = max(worst[name], float(np.abs(e.numpy() - g).max()))
    parity = Parity(worst, len(batches))
    if parity.worst > tolerance:
        name = max(worst, key=worst.get)
        raise ObscuraError(
            f"parity: ONNX output {name} differs from PyTorch by {worst[name]:.3g} (> {tolerance:g}) in {path}"
        )
    return parity
