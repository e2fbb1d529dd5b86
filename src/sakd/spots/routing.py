"""The multi-path routing network: teacher and student merged at the feature spots (method.md §1.5).

The routed pass trains only the policy and the adaptors. The student's segments run with their
parameters detached (``torch.func.functional_call``), so the routing loss computes input gradients
through the student but never a gradient for its weights; the teacher is frozen. One backward of
(student loss + routing loss) therefore updates each side with exactly its own loss.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.func import functional_call

from sakd.models.staged import SpotInfo, StagedNet
from sakd.models.token_adaptors import make_spot_adaptor


def make_adaptors(
    student_spots: Sequence[SpotInfo], teacher_spots: Sequence[SpotInfo]
) -> tuple[nn.ModuleList, nn.ModuleList]:
    """S→T and T→S adaptors, one pair per feature spot: ConvReg for maps, Linear for vectors,
    token adaptors and map ↔ token bridges where a token map is involved (``make_spot_adaptor``)."""
    s2t = nn.ModuleList(
        make_spot_adaptor(s, t) for s, t in zip(student_spots, teacher_spots, strict=True)
    )
    t2s = nn.ModuleList(
        make_spot_adaptor(t, s) for s, t in zip(student_spots, teacher_spots, strict=True)
    )
    return s2t, t2s


@contextmanager
def eval_mode(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Put every module of ``modules`` in eval mode; restore each one's own mode afterwards."""
    switched = [module.__dict__ for module in modules if module.training]
    # Writing the flag directly skips nn.Module.__setattr__ (what .eval() sets, minus overhead).
    for attributes in switched:
        attributes["training"] = False
    try:
        yield
    finally:
        for attributes in switched:
            attributes["training"] = True


def _segments(net: StagedNet, spot_indices: Sequence[int]) -> list[nn.Sequential]:
    """The chain ``[*stages, head]`` cut after each spot: L + 1 segments sharing ``net``'s modules."""
    chain = [*net.stages, net.head]
    bounds = [0, *(index + 1 for index in spot_indices), len(chain)]
    return [
        nn.Sequential(*chain[start:stop])
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True)
    ]


def _run_detached(segment: nn.Sequential, x: Tensor) -> Tensor:
    """Run ``segment`` with its parameters detached: input gradients only, no weight gradients."""
    detached = {name: param.detach() for name, param in segment.named_parameters()}
    return functional_call(segment, detached, (x,))


def _ends_in_relu(stage: nn.Module) -> bool:
    return isinstance(stage, nn.Sequential) and len(stage) > 1 and isinstance(stage[-1], nn.ReLU)


class RoutedNetwork:
    """Per-sample routed forward through a (student, teacher) pair; owns no parameters.

    The adaptors ``s2t`` / ``t2s`` belong to the caller (the selector registers and trains them);
    the student and teacher are referenced, not registered, so they never appear in the caller's
    parameters or state dict. Both nets run in eval mode (the frozen teacher is expected to be in
    eval mode already; it is walked only when its top-level flag says otherwise).
    ``teacher_indices`` are the teacher's cuts when they differ from the student's
    ``spot_indices`` (a CNN ↔ ViT pair: paired in order); by default the same stages.
    """

    def __init__(
        self,
        student: StagedNet,
        teacher: StagedNet,
        spot_indices: Sequence[int],
        s2t: nn.ModuleList,
        t2s: nn.ModuleList,
        teacher_indices: Sequence[int] | None = None,
    ) -> None:
        self.student = student
        self.teacher = teacher
        self.spot_indices = list(spot_indices)
        self.teacher_indices = (
            self.spot_indices if teacher_indices is None else list(teacher_indices)
        )
        self.s2t = s2t
        self.t2s = t2s
        self._student_segments = _segments(student, self.spot_indices)
        self._teacher_segments = _segments(teacher, self.teacher_indices)
        first_stage = self.teacher_indices[0] if self.teacher_indices else None
        self._reuse_needs_relu = first_stage is not None and _ends_in_relu(
            teacher.stages[first_stage]
        )

    def __call__(
        self, images: Tensor, decisions: Tensor, first_teacher_out: Tensor | None = None
    ) -> Tensor:
        """Routed logits z_mix (B, classes) for 0/1 ``decisions`` (B, K); 1 = teacher path.

        ``first_teacher_out`` is the teacher's first segment output on ``images`` (F_T[p_1], or the
        teacher logits when there is no feature spot) from the normal pass; it is recomputed when
        None. It may be the pre-activation feature: ReLU is idempotent, so it is re-applied.
        """
        num_feature_spots = len(self.spot_indices)
        student_x = teacher_x = images
        nets = (self.student, self.teacher) if self.teacher.training else (self.student,)
        with eval_mode([module for net in nets for module in net.modules()]):
            for j, (student_segment, teacher_segment) in enumerate(
                zip(self._student_segments, self._teacher_segments, strict=True)
            ):
                student_out = _run_detached(student_segment, student_x)
                if j == 0 and first_teacher_out is not None:
                    teacher_out = (
                        torch.relu(first_teacher_out)
                        if self._reuse_needs_relu
                        else first_teacher_out
                    )
                else:
                    teacher_out = teacher_segment(teacher_x)
                if j == num_feature_spots:
                    break
                choice = _per_sample(decisions[:, j], teacher_out)
                teacher_x = choice * teacher_out + (1 - choice) * self.s2t[j](student_out)
                if student_out.dim() != teacher_out.dim():  # a map on one side, tokens on the other
                    choice = _per_sample(decisions[:, j], student_out)
                student_x = choice * self.t2s[j](teacher_out) + (1 - choice) * student_out
        choice = _per_sample(decisions[:, -1], teacher_out)
        return choice * teacher_out + (1 - choice) * student_out


def _per_sample(column: Tensor, like: Tensor) -> Tensor:
    """(B,) decisions shaped to broadcast over ``like``'s non-batch dimensions, in its dtype."""
    return column.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))
