"""The staged-network contract that every model in sakd follows.

A staged network is a chain of stages followed by a head::

    x -> stages[0] -> F[0] -> stages[1] -> F[1] -> ... -> stages[-1] -> F[-1] (pooled vector) -> head -> logits

``F`` is the list of *spot features*. Each entry is described by a :class:`SpotInfo`: its role
(``"stem"``, ``"stage"`` or ``"pooled"``), channels and spatial reduction. Distillers never address a
feature by list position: they ask for spots by role through :func:`resolve_spots`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sakd.errors import SakdError
from sakd.models.tokens import TokenLayout, token_layout

ROLES = ("stem", "stage", "pooled")


@dataclass(frozen=True)
class SpotInfo:
    """Description of one spot feature ``F[index]`` of a staged network.

    ``reduction`` is input size / feature size along height (1 for full resolution; the patch size
    for a token map); ``shape`` is the feature shape without the batch dimension for the input size
    the info was computed for: (C, H, W) for a map, (C,) for a pooled vector, (N, C) for a token map
    (a transformer block's output), whose layout (prefix tokens, patch grid) is ``tokens``.
    ``name`` is what users read (logs, reports, ``sakd inspect``): the module path of the stage's
    last module for a user model cut by :func:`~sakd.models.wrap.stage_model` (e.g. ``layer2``),
    otherwise ``stem``, ``stage1`` … (counted from 1 after the stem, as in ``stage:N``), ``pooled``.
    """

    index: int
    role: str
    channels: int
    reduction: int
    shape: tuple[int, ...]
    name: str = ""
    tokens: TokenLayout | None = None

    @property
    def label(self) -> str:
        """``name (C×H×W)``: the name with the feature's shape, e.g. ``stage2 (32×16×16)``."""
        return f"{self.name} ({'×'.join(str(d) for d in self.shape)})"

    @property
    def is_map(self) -> bool:
        """True for (C, H, W) feature maps, False for pooled vectors."""
        return len(self.shape) == 3

    @property
    def is_tokens(self) -> bool:
        """True for (N, C) token maps with a known patch grid (see :mod:`sakd.models.tokens`)."""
        return self.tokens is not None


class StagedNet(nn.Module):
    """A network as ``stages`` (an ``nn.ModuleList``) plus a ``head``; see the module docstring.

    Subclasses build ``self.stages``, ``self.head`` and ``self.stage_roles`` (one role per stage).
    A stage whose last submodule is an activation (``nn.ReLU``) exposes its pre-activation output
    for distillers that need it (AB): the stage must then be an ``nn.Sequential``.
    """

    stages: nn.ModuleList
    head: nn.Module
    stage_roles: tuple[str, ...]
    input_size: int = 32

    @property
    def num_stages(self) -> int:
        """Number of stages, i.e. of spot features (the head not counted)."""
        return len(self.stages)

    def run(self, x: Tensor, start: int = 0, stop: int | None = None) -> Tensor:
        """Run the chain ``[*stages, head][start:stop]`` on ``x``; ``stop=None`` runs to the logits."""
        chain = [*self.stages, self.head]
        for module in chain[start:stop]:
            x = module(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, num_classes)."""
        return self.run(x)

    def forward_features(self, x: Tensor, preact: bool = False) -> tuple[list[Tensor], Tensor]:
        """Spot features ``F`` (one per stage) and logits; with ``preact`` map features are pre-ReLU."""
        feats: list[Tensor] = []
        for stage in self.stages:
            if preact and _ends_in_activation(stage):
                pre = stage[:-1](x)
                x = stage[-1](pre)
                feats.append(pre)
            else:
                x = stage(x)
                feats.append(x)
        return feats, self.head(x)

    def activate(self, feats: list[Tensor]) -> list[Tensor]:
        """Post-activation spot features from the ``forward_features(x, preact=True)`` ones."""
        return [
            stage[-1](feat) if _ends_in_activation(stage) else feat
            for stage, feat in zip(self.stages, feats, strict=True)
        ]

    @property
    def source_module(self) -> nn.Module:
        """The module whose parameter names :meth:`export_state_dict` uses (self for zoo models)."""
        return self

    def export_state_dict(self) -> dict[str, Tensor]:
        """The weights as a plain state dict in the source module's own names, on the CPU.

        For a zoo model these are its own names; for a user module staged by
        :func:`~sakd.models.wrap.stage_model` they are the user module's, so
        ``MyNet().load_state_dict(net.export_state_dict())`` loads strictly.
        """
        return {k: v.detach().to("cpu", copy=True) for k, v in self.state_dict().items()}

    def load_export_state_dict(self, state: dict[str, Tensor], what: str = "state dict") -> None:
        """Load weights in the names of :meth:`export_state_dict`, strictly.

        A mismatch raises :class:`SakdError` naming ``what`` and the first differing keys.
        """
        check_state_dict_keys(self.state_dict(), state, what, type(self).__name__)
        with torch.no_grad():
            self.load_state_dict(state, strict=True)

    def load_weights(self, state: dict[str, Tensor], what: str = "state dict") -> str:
        """Load ``state`` strictly, in any name set this network knows; returns which one it was.

        A sakd checkpoint's state dict (``stages.0.…``), the user's own ``state_dict()`` of the
        source module, and for zoo models RepDistiller's / mdistiller's module names
        (:mod:`sakd.models.layouts`) all load; anything else raises a one-line :class:`SakdError`.
        """
        from sakd.models.layouts import OWN_NAMES, match_layout

        if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
            raise SakdError(f"{what} is not a state dict (a dict of tensors)")
        own = self.state_dict()
        if state.keys() == own.keys():
            check_state_dict_keys(own, state, what, type(self).__name__)
            label = OWN_NAMES
        elif self.source_module is not self:
            self.load_export_state_dict(state, what)
            return "the module's own names"
        else:
            label, state = match_layout(self, state, what)
        with torch.no_grad():
            self.load_state_dict(state, strict=True)
        return label

    def spot_info(self, input_size: int | None = None) -> list[SpotInfo]:
        """Describe every spot feature for a square input of ``input_size`` (default: the model's)."""
        size = input_size or self.input_size
        key = ("_spot_info_cache", size)
        cache = self.__dict__.setdefault("_spot_info_cache", {})
        if key not in cache:
            cache[key] = _describe(self, size)
        return list(cache[key])


def check_state_dict_keys(
    expected: dict[str, Tensor], state: dict[str, Tensor], what: str, model: str
) -> None:
    """Raise a one-line :class:`SakdError` unless ``state`` has exactly ``expected``'s keys and shapes."""
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise SakdError(f"{what} is not a state dict (a dict of tensors)")
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if keys:
            shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
            problems.append(f"{len(keys)} {label} ({shown})")
    if problems:
        raise SakdError(
            f"{what} does not fit the architecture of {model}: {'; '.join(problems)}; it must be this module's own "
            "state_dict() for the same architecture and number of classes"
        )


def _ends_in_activation(stage: nn.Module) -> bool:
    return isinstance(stage, nn.Sequential) and len(stage) > 1 and isinstance(stage[-1], nn.ReLU)


@torch.no_grad()
def _describe(net: StagedNet, size: int) -> list[SpotInfo]:
    in_channels = _first_conv_channels(net)
    x = torch.zeros(1, in_channels, size, size, device="meta")
    infos = []
    names = _spot_names(net)
    for i, (stage, role) in enumerate(zip(net.stages, net.stage_roles, strict=True)):
        x = _meta_call(stage, x)
        shape = tuple(x.shape[1:])
        tokens = token_layout(shape, getattr(net, "num_prefix_tokens", None))
        reduction = size // shape[1] if len(shape) == 3 else 0
        if tokens is not None:
            reduction = size // tokens.grid[0]
        infos.append(
            SpotInfo(
                index=i,
                role=role,
                channels=shape[-1] if tokens is not None else shape[0],
                reduction=reduction,
                shape=shape,
                name=names[i],
                tokens=tokens,
            )
        )
    return infos


def _spot_names(net: StagedNet) -> list[str]:
    """The stages' own names (``stage_names``, set for user models) or ``stem``/``stageN``/``pooled``."""
    own = getattr(net, "stage_names", None)
    if own is not None:
        return list(own)
    names, count = [], 0
    for role in net.stage_roles:
        if role == "stage":
            count += 1
            names.append(f"stage{count}")
        else:
            names.append(role)
    return names


def _first_conv_channels(net: nn.Module) -> int:
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    return 3


def _meta_call(module: nn.Module, x: Tensor) -> Tensor:
    """Shape inference without touching real weights or BN statistics (runs on a meta copy)."""
    meta = _meta_copy(module)
    meta.eval()
    return meta(x)


def _meta_copy(module: nn.Module) -> nn.Module:
    import copy

    clone = copy.deepcopy(module)
    return clone.to_empty(device="meta")


SPOT_ROLE_HELP = (
    "'stages' (every stage output), 'stage:N' (output of stage N, counted from 1 after the stem), "
    "'last_stage', 'maps' (stem and every stage output), 'pooled' (the pooled vector), 'logits'"
)


def resolve_spots(spots: Sequence[SpotInfo], role: str) -> list[SpotInfo]:
    """The spot features a distiller asks for by ``role``; raises :class:`SakdError` when absent.

    Roles: see :data:`SPOT_ROLE_HELP`. ``'logits'`` resolves to an empty list (no feature spots).
    """
    stages = [s for s in spots if s.role == "stage"]
    if role == "logits":
        return []
    if role == "stages":
        found = stages
    elif role == "last_stage":
        found = stages[-1:]
    elif role == "maps":
        found = [s for s in spots if s.role in ("stem", "stage")]
    elif role == "pooled":
        found = [s for s in spots if s.role == "pooled"]
    elif role.startswith("stage:"):
        n = int(role.split(":", 1)[1])
        if not 1 <= n <= len(stages):
            raise SakdError(
                f"spot 'stage:{n}' does not exist: the model has {len(stages)} stages "
                f"(choose a stage between 1 and {len(stages)})"
            )
        found = [stages[n - 1]]
    else:
        raise SakdError(f"unknown spot role {role!r}: use one of {SPOT_ROLE_HELP}")
    if not found:
        raise SakdError(f"the model has no spot of role {role!r}")
    return found
