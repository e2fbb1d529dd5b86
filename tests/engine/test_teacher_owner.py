"""The distillation task is the one owner of the teacher's frozen state, and gives it back."""

import torch

from sakd.engine.training_tasks import DistillationTask
from sakd.models import create_model
from sakd.spot_modes import SpotMode
from sakd.spots import build_selector


def _task(teacher):
    student = create_model("resnet8", num_classes=10)
    selector = build_selector(SpotMode.ADAPTIVE, student, teacher, [1, 2, 3])
    group = dict(lr=0.1, weight_decay=0.0, momentum=0.9)
    return DistillationTask(
        student, teacher, selector, [], ce_weight=1.0, student_group=group, agent_group=group
    )


def test_the_task_freezes_the_teacher_and_gives_it_back_as_it_came():
    teacher = create_model("resnet20", num_classes=10).train()
    first = next(teacher.parameters())
    first.requires_grad_(False)  # a flag the user set: it must come back as it was
    task = _task(teacher)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    task.train()
    assert task.student.training and not teacher.training
    images = torch.randn(4, 3, 32, 32)
    loss = task.selector.routed(images, torch.ones(4, 4)).sum()
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    task.release_teacher()
    assert teacher.training
    assert not first.requires_grad
    assert all(p.requires_grad for name, p in teacher.named_parameters() if p is not first)
