"""The two tasks sakd trains: a network alone, and a student distilled from a frozen teacher.

:class:`DistillationTask` composes any distiller (through the :class:`~sakd.losses.Distiller`
contract) with any spot selector (fixed / random / adaptive / anti, through
:class:`~sakd.spots.SpotSelector`). It receives a list of :class:`LossTerm` (the builder gives the
logit-KD term when ``loss.kd_weight`` > 0, then the chosen distiller's term); one step gives named
losses::

    ce       = w_ce · CE(z_S, y)
    kd       = α · gated KD at the logit spot                 (weights column K)
    <name>   = β · Σ_k gated distiller loss at its spots      (columns 1..L, or K for logit losses)
    routing  = L_R of the policy (adaptive / anti only)

Vanilla KD is the distiller ``kd`` as the only term. The spot weights are detached, so the loss
terms train only the student and their own parts; the selector keeps the routing loss away from
the student by construction.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sakd.engine.records import LOGIT_SPOT
from sakd.engine.task_contract import ParamGroup, Phase, StepResult, Task, pretrain_data_key
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


@dataclass
class LossTerm:
    """One teacher-driven loss of the distillation step: ``weight`` × ``module``'s gated loss.

    ``student_spots`` / ``teacher_spots`` are the stage indices it reads (paired in order); empty
    for a logit loss, which reads ``[logits]`` and is gated by the selector's logit column (the
    last one); a feature loss is gated by the feature-spot columns. Its loss is logged under
    ``name``; a term with weight 0 is not computed. ``checkpoint_name``: the name its state is
    saved under (None: not saved, for stateless terms such as the logit-KD term).
    """

    name: str
    weight: float
    module: Distiller
    student_spots: list[int] = field(default_factory=list)
    teacher_spots: list[int] = field(default_factory=list)
    checkpoint_name: str | None = None

    @property
    def columns(self) -> slice:
        """The columns of the selector's (B, K) weights that gate this term."""
        return slice(0, -1) if self.student_spots else slice(-1, None)


class DistillationTask(Task):
    """Student + frozen teacher + spot selector + weighted CE and loss terms (see the module doc).

    The task is the one owner of the teacher's frozen state: it sets eval mode and
    ``requires_grad=False`` when built, keeps eval mode through :meth:`train`, and
    :meth:`release_teacher` restores what the teacher came with (the engine calls it when the run
    ends, so a module passed from Python is given back as it was).
    """

    def __init__(
        self,
        student: StagedNet,
        teacher: StagedNet,
        selector: SpotSelector,
        terms: Sequence[LossTerm],
        *,
        ce_weight: float,
        student_group: dict,
        agent_group: dict,
    ) -> None:
        super().__init__()
        names = [term.name for term in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"loss terms must have distinct names, got {names}")
        self.student = student
        # The teacher is frozen and never checkpointed: keep it out of the module tree.
        self.__dict__["teacher"] = teacher
        self._teacher_came_as = (teacher.training, [p.requires_grad for p in teacher.parameters()])
        teacher.eval().requires_grad_(False)
        self.selector = selector
        self.terms = list(terms)
        self.term_modules = nn.ModuleList([term.module for term in self.terms])
        self.ce_weight = ce_weight
        self._student_group = student_group
        self._agent_group = agent_group
        self._preact = any(term.module.preact for term in self.terms)

    def release_teacher(self) -> None:
        """Give the teacher back in the mode and with the ``requires_grad`` flags it came with."""
        training, flags = self._teacher_came_as
        for param, flag in zip(self.teacher.parameters(), flags, strict=True):
            param.requires_grad_(flag)
        self.teacher.train(training)

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
        pretraining = [t for t in self.terms if t.module.pretrain_epochs > 0]
        phases = [self._pretrain_phase(t, k) for k, t in enumerate(pretraining)]
        student_params = [*self.student.parameters(), *self.term_modules.parameters()]
        groups = {"student": ParamGroup(student_params, **self._student_group)}
        agent_params = list(self.selector.parameters())
        if agent_params:
            groups["agent"] = ParamGroup(agent_params, **self._agent_group)
        phases.append(Phase("distill", epochs, self._step, groups))
        return phases

    def _pretrain_phase(self, term: LossTerm, position: int) -> Phase:
        distiller = term.module
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
            functools.partial(self._pretrain_step, term),
            {"pretrain": group},
            decay=False,
            evaluate=False,
            data_key=pretrain_data_key(position),
        )

    # ------------------------------------------------------------------- steps
    def _forward_pair(self, images: Tensor):
        with torch.no_grad():
            teacher_feats, teacher_logits = self.teacher.forward_features(
                images, preact=self._preact
            )
        student_feats, student_logits = self.student.forward_features(images, preact=self._preact)
        return student_feats, student_logits, teacher_feats, teacher_logits

    @staticmethod
    def _spot_feats(term: LossTerm, student_feats, teacher_feats, student_logits, teacher_logits):
        if not term.student_spots:
            return [student_logits], [teacher_logits]
        return (
            [student_feats[i] for i in term.student_spots],
            [teacher_feats[i] for i in term.teacher_spots],
        )

    def _pretrain_step(
        self, term: LossTerm, images: Tensor, labels: Tensor, index: Tensor, epoch: int
    ) -> StepResult:
        if not term.module.pretrain_trains_student:
            # As the authors' init stage: a student the stage does not train runs in eval mode,
            # so its BN running statistics do not move (the trainer sets train mode per epoch).
            self.student.eval()
        s_feats, s_logits, t_feats, t_logits = self._forward_pair(images)
        s_spot, t_spot = self._spot_feats(term, s_feats, t_feats, s_logits, t_logits)
        ctx = DistillContext(labels=labels, index=index, epoch=epoch)
        return StepResult(
            {f"pretrain_{term.module.name}": term.module.pretrain_loss(s_spot, t_spot, ctx)}
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
        for term in self.terms:
            if term.weight > 0:
                s_spot, t_spot = self._spot_feats(term, s_feats, t_feats, s_logits, t_logits)
                gated = term.module(s_spot, t_spot, weights[:, term.columns], ctx)
                losses[term.name] = term.weight * gated
        if selection.routing_loss is not None:
            losses["routing"] = selection.routing_loss
        stats = {"spot_rates": selection.weights.float().mean(0)}
        stats.update(selection.stats)
        return StepResult(losses, s_logits, stats)

    def _activated(self, net: StagedNet, feats: list[Tensor]) -> list[Tensor]:
        """Post-activation features (the routed network's inputs) from possibly pre-ReLU ones."""
        return net.activate(feats) if self._preact else feats

    @property
    def spot_names(self) -> list[str]:
        """The weights' columns: the distiller's feature spots (the student's names), then logits."""
        return [spot["name"] for spot in self.spot_facts()]

    def spot_facts(self) -> list[dict[str, str]]:
        """Per spot (feature spots…, logits): its name and both nets' features there (run.json)."""
        student, teacher = self.student.spot_info(), self.teacher.spot_info()
        student_spots, teacher_spots = self._feature_spots()
        facts = [
            {"name": student[s].name, "student": student[s].label, "teacher": teacher[t].label}
            for s, t in zip(student_spots, teacher_spots, strict=True)
        ]
        return [*facts, {"name": LOGIT_SPOT, "student": LOGIT_SPOT, "teacher": LOGIT_SPOT}]

    def _feature_spots(self) -> tuple[list[int], list[int]]:
        """Student and teacher stages of the selector's feature columns (the feature term's spots)."""
        for term in self.terms:
            if term.student_spots:
                return term.student_spots, term.teacher_spots
        return [], []

    def checkpoint_modules(self) -> dict[str, nn.Module]:
        modules: dict[str, nn.Module] = {"student": self.student, "selector": self.selector}
        for term in self.terms:
            if term.checkpoint_name is not None:
                modules[term.checkpoint_name] = term.module
        return modules

    @property
    def eval_model(self) -> nn.Module:
        return self.student
