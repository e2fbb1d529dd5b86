"""sakd.distill on torchvision and timm model objects (the optional extra)."""

from __future__ import annotations

import pytest
import torch

torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")

import sakd  # noqa: E402

pytestmark = pytest.mark.vision


class Noise(torch.utils.data.Dataset):
    """uint8 3×32×32 images whose mean brightness gives one of 4 classes."""

    def __init__(self, count: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(count) % 4
        base = (self.labels * 60 + 20).view(-1, 1, 1, 1)
        noise = torch.randint(-20, 20, (count, 3, 32, 32), generator=g)
        self.images = (base + noise).clamp(0, 255).to(torch.uint8)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.images[index], int(self.labels[index])


@pytest.mark.parametrize(
    ("make_teacher", "make_student", "fresh"),
    [
        (
            lambda: torchvision.models.resnet34(num_classes=4),
            lambda: torchvision.models.resnet18(num_classes=4),
            lambda: torchvision.models.resnet18(num_classes=4),
        ),
        (
            lambda: torchvision.models.resnet18(num_classes=4),
            lambda: timm.create_model("resnet18", num_classes=4),
            lambda: timm.create_model("resnet18", num_classes=4),
        ),
    ],
    ids=["torchvision", "timm-student"],
)
def test_library_objects_distil_and_export_in_their_own_names(
    tmp_path, make_teacher, make_student, fresh
):
    torch.manual_seed(0)
    teacher, student = make_teacher(), make_student()
    run = sakd.distill(
        teacher,
        student,
        Noise(16, 0),
        Noise(8, 1),
        distiller="at",
        mode="adaptive",
        epochs=1,
        batch_size=8,
        progress=False,
        output_dir=str(tmp_path / "run"),
    )
    assert run.model is student
    out = run.export(tmp_path / "student.pt", checkpoint="last")
    net = fresh()
    net.load_state_dict(torch.load(out, weights_only=True), strict=True)
    for key, value in net.state_dict().items():
        assert torch.equal(value, student.state_dict()[key]), key
