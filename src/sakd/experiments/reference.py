"""The published numbers (``reference/*.csv``, copied from the project's reference folder).

``sakd_paper_results.csv`` holds the SAKD paper's tables R1–R3 (fixed "Stan." and adaptive top-1
per pair and distiller); ``sakd_paper_baselines.csv`` their teacher (T), student (S) and vanilla-KD
rows; ``logit_sota.csv`` the published numbers of today's logit distillers (mdistiller's KD and
DKD, Sun et al.'s KD + LS and DKD + LS). The paper's model and distiller names are mapped to ours (``WRN_40_2`` → ``wrn_40_2``,
``MobileNetV2`` → ``mobilenetv2``, ``Fitnets`` → ``fitnet``, …).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

PACKAGE = "sakd.experiments"
PAPER_NAMES = {
    "WRN_40_2": "wrn_40_2",
    "WRN_16_2": "wrn_16_2",
    "MobileNetV2": "mobilenetv2",
    "ResNet50": "resnet50",
    "ShuffleNetV1": "shufflev1",
    "Fitnets": "fitnet",
}
# Misprints in the paper's tables (see reference/README.md), shown next to the affected numbers.
KNOWN_MISPRINTS = {
    ("cifar100", "vgg13", "mobilenetv2", "vid"): "paper prints gain +0.76; its numbers give -0.24",
    ("cifar100", "resnet32x4", "resnet32", None): "paper's teacher row reads 74.92 (misprint)",
}


def paper_name(name: str) -> str:
    """Our name of a model or distiller as the paper spells it."""
    return PAPER_NAMES.get(name, name.lower())


@dataclass(frozen=True)
class Published:
    """The paper's numbers for one pair × distiller (top-1 %, None where it prints none)."""

    table: str
    fixed: float | None
    adaptive: float | None
    note: str | None = None

    @property
    def gain(self) -> float | None:
        """Adaptive − fixed as published."""
        if self.fixed is None or self.adaptive is None:
            return None
        return self.adaptive - self.fixed


def _rows(filename: str) -> list[dict[str, str]]:
    text = resources.files(PACKAGE).joinpath("reference").joinpath(filename).read_text()
    return list(csv.DictReader(io.StringIO(text)))


@lru_cache(maxsize=1)
def published_results() -> dict[tuple[str, str, str, str], Published]:
    """(dataset, teacher, student, distiller) → the paper's fixed and adaptive top-1."""
    table: dict[tuple[str, str, str, str], Published] = {}
    for row in _rows("sakd_paper_results.csv"):
        key = (
            row["dataset"],
            paper_name(row["teacher"]),
            paper_name(row["student"]),
            paper_name(row["distiller"]),
        )
        table[key] = Published(
            row["table"], float(row["fixed_top1"]), float(row["adaptive_top1"]), misprint(*key)
        )
    return table


@dataclass(frozen=True)
class PublishedBaseline:
    """The paper's teacher (T), student-alone (S) and vanilla-KD rows of one pair's column."""

    table: str
    teacher: float | None
    student: float | None
    kd: float | None


@lru_cache(maxsize=1)
def published_baselines() -> dict[tuple[str, str, str], PublishedBaseline]:
    """(dataset, teacher, student) → the paper's T, S and KD rows."""
    rows: dict[tuple[str, str, str], dict[str, str | float]] = {}
    for row in _rows("sakd_paper_baselines.csv"):
        key = (row["dataset"], paper_name(row["teacher"]), paper_name(row["student"]))
        rows.setdefault(key, {"table": row["table"]})[row["row"]] = float(row["top1"])
    return {
        key: PublishedBaseline(
            str(v["table"]), _num(v.get("T")), _num(v.get("S")), _num(v.get("KD"))
        )
        for key, v in rows.items()
    }


def _num(value: str | float | None) -> float | None:
    return None if value is None else float(value)


def misprint(dataset: str, teacher: str, student: str, distiller: str | None) -> str | None:
    """The known misprint affecting this pair (× distiller), if any."""
    return KNOWN_MISPRINTS.get((dataset, teacher, student, distiller)) or KNOWN_MISPRINTS.get(
        (dataset, teacher, student, None)
    )


def lookup(dataset: str, teacher: str, student: str, distiller: str) -> Published | None:
    """The published fixed/adaptive top-1 of a cell; ``kd`` gets the paper's vanilla-KD row."""
    found = published_results().get((dataset, teacher, student, distiller))
    if found is not None:
        return found
    base = published_baselines().get((dataset, teacher, student))
    if distiller == "kd" and base is not None and base.kd is not None:
        return Published(base.table, base.kd, None, misprint(dataset, teacher, student, distiller))
    return None


@dataclass(frozen=True)
class LogitReference:
    """A published top-1 of a logit distiller (``logit_sota.csv``): who, under which protocol."""

    source: str
    method: str
    top1: float
    protocol: str
    reference: str


@lru_cache(maxsize=1)
def logit_references() -> dict[tuple[str, str, str, str], list[LogitReference]]:
    """(dataset, teacher, student, method) → published numbers of KD, DKD, KD+LS, DKD+LS.

    ``method`` is the label a run's cell carries (``kd``, ``dkd``, ``kd+ls``, ``dkd+ls``); every
    number is at the fixed (logit) spot on the full batch, so it compares with our ``fixed`` column.
    """
    table: dict[tuple[str, str, str, str], list[LogitReference]] = {}
    for row in _rows("logit_sota.csv"):
        key = (row["dataset"], row["teacher"], row["student"], row["method"])
        table.setdefault(key, []).append(
            LogitReference(
                row["source"], row["method"], float(row["top1"]), row["protocol"], row["reference"]
            )
        )
    return table


@dataclass(frozen=True)
class PublishedTeacher:
    """A teacher's published test top-1 and where it is printed."""

    top1: float
    source: str


@lru_cache(maxsize=1)
def published_teachers() -> dict[tuple[str, str], PublishedTeacher]:
    """(dataset, teacher) → its published top-1: RepDistiller's, else the SAKD paper's T row.

    RepDistiller's README (``cifar100_baselines.csv``, last epoch of 240) describes the very
    checkpoints its ``fetch_pretrained_teachers.sh`` downloads; the SAKD paper's T rows
    (``sakd_paper_baselines.csv``) cover Tiny-ImageNet, and a teacher printed with two values there
    (a known misprint) takes its most frequent one.
    """
    table: dict[tuple[str, str], PublishedTeacher] = {}
    for row in _rows("cifar100_baselines.csv"):
        if row["method"] == "Teacher" and row["source"] == "RepDistiller":
            key = (row["dataset"], paper_name(row["teacher"]))
            table[key] = PublishedTeacher(
                float(row["top1"]), f"RepDistiller README ({row['protocol']})"
            )
    paper: dict[tuple[str, str], list[float]] = {}
    for row in _rows("sakd_paper_baselines.csv"):
        if row["row"] == "T":
            paper.setdefault((row["dataset"], paper_name(row["teacher"])), []).append(
                float(row["top1"])
            )
    for key, values in paper.items():
        if key not in table:
            top1 = max(values, key=values.count)
            table[key] = PublishedTeacher(top1, "SAKD paper, teacher row (T)")
    return table
