"""What counts as diverged weights, checked in one place for training, resume and export.

Weights are *diverged* when a floating-point tensor of a saved module is not finite (NaN/inf),
or when a trained parameter (``requires_grad``) has grown past the run's ``weight_limit``
(default :data:`WEIGHT_LIMIT`) in magnitude. The second test matters because a run whose
learning rate is far too high does not go to NaN at once: it goes on with finite but useless
weights (``benchmarks/weight_growth.py``: resnet8 at lr 100 reaches 4e6 while its BatchNorm
variances reach 1e25 and the run ends at chance; at lr 1 no trained weight passes 1.2), and a
checkpoint of such weights is useless to resume from or to export. Buffers (BatchNorm's running
statistics, memory banks) follow the data's scale and are only checked for being finite.

The trainer checks every module after every epoch, before anything is saved, so ``last.pt`` and
``best.pt`` only ever hold healthy weights; a resume refuses a checkpoint that does not (one
written by an older sakd), and ``sakd export`` warns about one.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

# Magnitude past which a trained parameter counts as diverged (the default of ``weight_limit``).
WEIGHT_LIMIT = 1e4


def trained_names(module: nn.Module) -> set[str]:
    """The state-dict names of ``module``'s trained parameters (``requires_grad``)."""
    return {name for name, p in module.named_parameters() if p.requires_grad}


def find_divergence(
    states: Mapping[str, Mapping[str, object]],
    trained: Mapping[str, set[str]],
    limit: float | None = WEIGHT_LIMIT,
) -> str | None:
    """The first sign of divergence in ``states`` (module name -> state dict), or None.

    ``trained[module]`` names the tensors that are trained parameters (checked against
    ``limit``; None: not checked); every floating-point tensor is checked for being finite. The answer
    reads as part of a sentence: ``"student parameter 'head.weight' reached 3.1e+24 ..."``.
    """
    for module, state in states.items():
        names = [
            name
            for name, t in state.items()
            if isinstance(t, Tensor) and t.is_floating_point() and t.numel() > 0
        ]
        if not names:
            continue
        with torch.no_grad():  # one device sync per module
            peaks = torch.stack([state[n].detach().abs().amax().float() for n in names]).tolist()
        limited = trained.get(module, set())
        for name, peak in zip(names, peaks, strict=True):
            kind = "parameter" if name in limited else "tensor"
            if peak != peak or peak == float("inf"):
                return f"{module} {kind} {name!r} is not finite (NaN/inf)"
            if limit is not None and name in limited and peak > limit:
                return (
                    f"{module} parameter {name!r} reached {peak:.2g} in magnitude, past the "
                    f"limit of {limit:.0e} for trained weights (weight_limit)"
                )
    return None


def module_divergence(
    modules: Mapping[str, nn.Module], limit: float | None = WEIGHT_LIMIT
) -> str | None:
    """:func:`find_divergence` of live modules (their state dicts, their trained parameters)."""
    return find_divergence(
        {k: m.state_dict() for k, m in modules.items()},
        {k: trained_names(m) for k, m in modules.items()},
        limit,
    )
