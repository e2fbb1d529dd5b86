"""Time sakd's CRD loss (forward + backward) against a straightforward gather-based CRD.

The gather-based version is RepDistiller's formulation, written here: it gathers a (B, K+1, D)
tensor of rows from each memory bank and batch-multiplies it with the embeddings. It gets its
negative indices pre-drawn outside the timed region (RepDistiller's data loader draws them), while
sakd's CRD draws them inside its timed forward. Both update their memory banks.

    python benchmarks/crd_step.py                 # loss only, B=64, K=16384, N=50000, D=128
    python benchmarks/crd_step.py --full-step     # also a whole training step, CRD vs AT,
                                                  # resnet32x4 -> resnet8x4, batch 64

Prints the median time of each variant and their ratio.
"""

from __future__ import annotations

import argparse
import math
import platform
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _harness import interleaved_times, median_times, pooled_spot
from torch import Tensor, nn

from sakd.losses import DistillContext, DistillerSetup, get_distiller
from sakd.models.registry import create_model
from sakd.models.staged import resolve_spots


class GatherCRD(nn.Module):
    """RepDistiller-style CRD: gather bank rows, bmm, NCE with Z from the first batch."""

    def __init__(self, student_dim: int, teacher_dim: int, feat_dim: int, num_train: int) -> None:
        super().__init__()
        self.student_linear = nn.Linear(student_dim, feat_dim)
        self.teacher_linear = nn.Linear(teacher_dim, feat_dim)
        bound = 1.0 / math.sqrt(feat_dim / 3)
        self.register_buffer("student_memory", torch.rand(num_train, feat_dim) * 2 * bound - bound)
        self.register_buffer("teacher_memory", torch.rand(num_train, feat_dim) * 2 * bound - bound)
        self.normalizers: list[float] = [-1.0, -1.0]
        self.temperature, self.momentum = 0.07, 0.5

    def forward(
        self, student: Tensor, teacher: Tensor, index: Tensor, contrast_index: Tensor
    ) -> Tensor:
        """(B, Ds), (B, Dt), (B,), (B, K+1) -> scalar loss."""
        batch, k_plus_1 = contrast_index.shape
        num_train, feat_dim = self.student_memory.shape
        student_embedded = F.normalize(self.student_linear(student), dim=1)
        teacher_embedded = F.normalize(self.teacher_linear(teacher), dim=1)
        flat = contrast_index.reshape(-1)
        teacher_rows = self.teacher_memory.index_select(0, flat).view(batch, k_plus_1, feat_dim)
        student_rows = self.student_memory.index_select(0, flat).view(batch, k_plus_1, feat_dim)
        out_student = torch.exp(
            torch.bmm(teacher_rows, student_embedded[:, :, None])[:, :, 0] / self.temperature
        )
        out_teacher = torch.exp(
            torch.bmm(student_rows, teacher_embedded[:, :, None])[:, :, 0] / self.temperature
        )
        for position, out in enumerate((out_student, out_teacher)):
            if self.normalizers[position] < 0:
                self.normalizers[position] = out.mean().item() * num_train
        loss = self._nce(out_student / self.normalizers[0]) + self._nce(
            out_teacher / self.normalizers[1]
        )
        with torch.no_grad():
            for bank, embedded in (
                (self.student_memory, student_embedded),
                (self.teacher_memory, teacher_embedded),
            ):
                rows = bank.index_select(0, index) * self.momentum + embedded * (1 - self.momentum)
                bank.index_copy_(0, index, F.normalize(rows, dim=1))
        return loss

    def _nce(self, probs: Tensor) -> Tensor:
        noise = (probs.shape[1] - 1) / self.student_memory.shape[0]
        log_positive = torch.log(probs[:, 0] / (probs[:, 0] + noise + 1e-7))
        log_negative = torch.log(noise / (probs[:, 1:] + noise + 1e-7))
        return -(log_positive.sum() + log_negative.sum()) / probs.shape[0]


def loss_benchmark(args: argparse.Namespace) -> None:
    """CRD loss forward + backward: sakd vs the gather formulation."""
    torch.manual_seed(0)
    batch, dim = args.batch, 256
    labels = torch.randint(args.num_classes, (args.num_train,))
    crd_cls = get_distiller("crd")
    params = crd_cls.Params(num_negatives=args.negatives, feat_dim=args.feat_dim)
    spots = (pooled_spot(dim),)
    ours = crd_cls(DistillerSetup(spots, spots, params, args.num_classes, labels))
    theirs = GatherCRD(dim, dim, args.feat_dim, args.num_train)
    inputs = [
        (torch.randn(batch, dim), torch.randn(batch, dim), torch.randperm(args.num_train)[:batch])
        for _ in range(args.warmup + args.repeats)
    ]
    negatives = [ours.sample_negatives(index) for _, _, index in inputs]
    weights = torch.ones(batch, 1)

    def step_ours(i: int) -> None:
        student, teacher, index = inputs[i]
        student = student.clone().requires_grad_(True)
        ctx = DistillContext(labels=labels[index], index=index)
        ours([student], [teacher], weights, ctx).backward()

    def step_theirs(i: int) -> None:
        student, teacher, index = inputs[i]
        student = student.clone().requires_grad_(True)
        contrast_index = torch.cat([index[:, None], negatives[i]], 1)
        theirs(student, teacher, index, contrast_index).backward()

    medians = median_times(
        interleaved_times({"sakd": step_ours, "gather": step_theirs}, args.warmup, args.repeats)
    )
    t_ours, t_theirs = medians["sakd"], medians["gather"]
    print(
        f"CRD loss fwd+bwd, B={batch} K={args.negatives} N={args.num_train} D={args.feat_dim}: "
        f"sakd {t_ours * 1e3:.1f} ms (negatives drawn inside), "
        f"gather {t_theirs * 1e3:.1f} ms (negatives pre-drawn), "
        f"sakd/gather = {t_ours / t_theirs:.3f}"
    )


def _training_step(name: str, args: argparse.Namespace) -> Callable[[int], None]:
    """A closure running one training step of resnet32x4 -> resnet8x4 with distiller ``name``."""
    torch.manual_seed(0)
    teacher = create_model("resnet32x4", num_classes=100).eval().requires_grad_(False)
    student = create_model("resnet8x4", num_classes=100)
    cls = get_distiller(name)
    s_spots = resolve_spots(student.spot_info(), cls.spot_role)
    t_spots = resolve_spots(teacher.spot_info(), cls.spot_role)
    labels_all = torch.randint(100, (args.num_train,))
    distiller = cls(DistillerSetup(tuple(s_spots), tuple(t_spots), cls.Params(), 100, labels_all))
    kd_cls = get_distiller("kd")
    kd = kd_cls(DistillerSetup((), (), kd_cls.Params(), 100, labels_all))
    optimizer = torch.optim.SGD(
        [*student.parameters(), *distiller.parameters()], lr=0.05, momentum=0.9
    )
    images = torch.randn(args.batch, 3, 32, 32)
    weights = torch.ones(args.batch, len(s_spots))

    def step(i: int) -> None:
        index = torch.randperm(args.num_train)[: args.batch]
        labels = labels_all[index]
        with torch.no_grad():
            t_feats, t_logits = teacher.forward_features(images)
        s_feats, s_logits = student.forward_features(images)
        ctx = DistillContext(labels=labels, index=index)
        s_spot = [s_feats[spot.index] for spot in s_spots]
        t_spot = [t_feats[spot.index] for spot in t_spots]
        loss = (
            F.cross_entropy(s_logits, labels)
            + kd([s_logits], [t_logits], torch.ones(args.batch, 1), ctx)
            + distiller(s_spot, t_spot, weights, ctx)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def full_step_benchmark(args: argparse.Namespace) -> None:
    """One training step (teacher fwd, student fwd/bwd, CE + KD + distiller, SGD): CRD vs AT."""
    steps = {name: _training_step(name, args) for name in ("at", "crd")}
    times = median_times(interleaved_times(steps, args.warmup, args.repeats))
    print(
        f"training step resnet32x4->resnet8x4, batch {args.batch}: AT {times['at'] * 1e3:.0f} ms, "
        f"CRD {times['crd'] * 1e3:.0f} ms, CRD/AT = {times['crd'] / times['at']:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--negatives", type=int, default=16384)
    parser.add_argument("--num-train", type=int, default=50000)
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--feat-dim", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--full-step", action="store_true", help="also time a whole training step")
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}"
    )
    loss_benchmark(args)
    if args.full_step:
        full_step_benchmark(args)


if __name__ == "__main__":
    main()
