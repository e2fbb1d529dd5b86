"""The two tasks sakd trains: a network alone, and a student distilled from a frozen teacher.

:class:`DistillationTask` composes any distiller (through the :class:`~sakd.losses.Distiller`
contract) with any spot selector (fixed / random / adaptive / anti, through
:class:`~sakd.spots.SpotSelector`). One step gives named losses::

    ce       = w_ce · CE(z_S, y)
    kd       = α · gated vanilla KD at the logit spot        (weights column K)
    <name>   = β · Σ_k gated distiller loss at feature spot k (weights columns 1..L)
    routing  = L_R of the policy (adaptive / anti only)

The spot weights are detached, so the distiller and KD terms train only the student and the
distiller's parts; the selector keeps the routing loss away from the student by construction.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sakd.engine.task import ParamGroup, Phase, StepResult, Task
from sakd.losses import DistillContext, Distiller
from sakd.models import StagedNet
from sakd.spots import SelectorInput, SpotSelector


class ClassificationTask(Task):
    """Train one network with cross-entropy (teachers, student baselines)."""

    def __init__(
        self, model: StagedNet, lr: float, weight_decay: float, momentum: float, nesterov: bool
    ):
        super().__init__()
        self.student = model
        self._group = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov)

    def phases(self, epochs: int) -> list[Phase]:
        group = ParamGroup(list(self.student.parameters()), **self._group)
        return [Phase("train", epochs, self._step, {"student": group})]

    def _step(self, images: Tensor, labels: Tensor, index: Tensor, epoch: int) -> StepResult:
        logits = self.student(images)
        return StepResult({"ce": F.cross_entropy(logits, labels)}, logits)

    def checkpoint_modules(self) -> dict[str, nn.Module]:
        return {"student": self.student}

    @property
    def eval_model(self) -> nn.Module:
        return self.student


class DistillationTask(Task):
    """Student + frozen teacher + (optional) distiller + gated KD + spot selector."""

    def __init__(
        self,
        student: StagedNet,
        teacher: StagedNet,
        distiller: Distiller | None,
        kd: Distiller,
        selector: SpotSelector,
        student_spots: Sequence[int],
        teacher_spots: Sequence[int],
        *,
        ce_weight: float,
        kd_weight: float,
        beta: float,
        student_group: dict,
        agent_group: dict,
    ) -> None:
        super().__init__()
        self.student = student
        # The teacher is frozen and never checkpointed: keep it out of the module tree.
        self.__dict__["teacher"] = teacher
        teacher.eval().requires_grad_(False)
        self.distiller = distiller
        self.kd = kd
        self.selector = selector
        self.student_spots = list(student_spots)
        self.teacher_spots = list(teacher_spots)
        self.ce_weight, self.kd_weight, self.beta = ce_weight, kd_weight, beta
        self._student_group = student_group
        self._agent_group = agent_group
        self._preact = distiller is not None and distiller.preact

    def train(self, mode: bool = True) -> DistillationTask:
        """Switch the student & trainable parts; the teacher stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def _apply(self, fn, recurse: bool = True):
        self.teacher._apply(fn, recurse)
        return super()._apply(fn, recurse)

    # ------------------------------------------------------------------ phases
    def phases(self, epochs: int) -> list[Phase]:
        phases = []
        if self.distiller is not None and self.distiller.pretrain_epochs > 0:
            phases.append(self._pretrain_phase())
        student_params = [*self.student.parameters(), *self.kd.parameters()]
        if self.distiller is not None:
            student_params += list(self.distiller.parameters())
        groups = {"student": ParamGroup(student_params, **self._student_group)}
        agent_params = list(self.selector.parameters())
        if agent_params:
            groups["agent"] = ParamGroup(agent_params, **self._agent_group)
        phases.append(Phase("distill", epochs, self._step, groups))
        return phases

    def _pretrain_phase(self) -> Phase:
        distiller = self.distiller
        params = list(distiller.pretrain_parameters())
        if distiller.pretrain_trains_student:
            head = {id(p) for p in self.student.head.parameters()}
            params += [p for p in self.student.parameters() if id(p) not in head]
        hp = distiller.params
        group = ParamGroup(
            params,
            lr=hp.pretrain_lr,
            weight_decay=hp.pretrain_weight_decay,
            momentum=hp.pretrain_momentum,
        )
        return Phase(
            f"pretrain-{distiller.name}",
            distiller.pretrain_epochs,
            self._pretrain_step,
            {"pretrain": group},
            decay=False,
            evaluate=False,
        )

    # ------------------------------------------------------------------- steps
    def _forward_pair(self, images: Tensor):
        with torch.no_grad():
            teacher_feats, teacher_logits = self.teacher.forward_features(
                images, preact=self._preact
            )
        student_feats, student_logits = self.student.forward_features(images, preact=self._preact)
        return student_feats, student_logits, teacher_feats, teacher_logits

    def _spot_feats(self, student_feats, teacher_feats, student_logits, teacher_logits):
        if not self.student_spots:
            return [student_logits], [teacher_logits]
        return (
            [student_feats[i] for i in self.student_spots],
            [teacher_feats[i] for i in self.teacher_spots],
        )

    def _pretrain_step(
        self, images: Tensor, labels: Tensor, index: Tensor, epoch: int
    ) -> StepResult:
        if not self.distiller.pretrain_trains_student:
            # As the authors' init stage: a student the stage does not train runs in eval mode,
            # so its BN running statistics do not move (the trainer sets train mode per epoch).
            self.student.eval()
        s_feats, s_logits, t_feats, t_logits = self._forward_pair(images)
        s_spot, t_spot = self._spot_feats(s_feats, t_feats, s_logits, t_logits)
        ctx = DistillContext(labels=labels, index=index, epoch=epoch)
        return StepResult(
            {f"pretrain_{self.distiller.name}": self.distiller.pretrain_loss(s_spot, t_spot, ctx)}
        )

    def _step(self, images: Tensor, labels: Tensor, index: Tensor, epoch: int) -> StepResult:
        s_feats, s_logits, t_feats, t_logits = self._forward_pair(images)
        selector_feats = (
            self._activated(self.student, s_feats),
            self._activated(self.teacher, t_feats),
        )
        selection = self.selector(
            SelectorInput(
                images=images,
                labels=labels,
                student_feats=selector_feats[0],
                teacher_feats=selector_feats[1],
                student_logits=s_logits,
                teacher_logits=t_logits,
            )
        )
        weights = selection.weights.to(
            s_logits.dtype if s_logits.is_floating_point() else torch.float32
        )
        ctx = DistillContext(labels=labels, index=index, epoch=epoch)
        ce_weight = self.ce_weight * selection.ce_scale
        losses = {"ce": ce_weight * F.cross_entropy(s_logits, labels)}
        logit_weight = weights[:, -1:]
        if self.kd_weight > 0:
            losses["kd"] = self.kd_weight * self.kd([s_logits], [t_logits], logit_weight, ctx)
        if self.distiller is not None and self.beta > 0:
            s_spot, t_spot = self._spot_feats(s_feats, t_feats, s_logits, t_logits)
            spot_weights = weights[:, :-1] if self.student_spots else logit_weight
            losses[self.distiller.name] = self.beta * self.distiller(
                s_spot, t_spot, spot_weights, ctx
            )
        if selection.routing_loss is not None:
            losses["routing"] = selection.routing_loss
        stats = {"spot_rates": selection.weights.float().mean(0)}
        stats.update(selection.stats)
        return StepResult(losses, s_logits, stats)

    def _activated(self, net: StagedNet, feats: list[Tensor]) -> list[Tensor]:
        """Post-activation features (the routed network's inputs) from possibly pre-ReLU ones."""
        return net.activate(feats) if self._preact else feats

    def checkpoint_modules(self) -> dict[str, nn.Module]:
        modules: dict[str, nn.Module] = {"student": self.student, "selector": self.selector}
        if self.distiller is not None:
            modules["distiller"] = self.distiller
        return modules

    @property
    def eval_model(self) -> nn.Module:
        return self.student
