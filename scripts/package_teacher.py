"""Package a trained teacher as src/sakd/assets/quickstart_teacher.pt (weights + config only).

    sakd train quickstart/teacher output_dir=runs/quickstart-teacher
    python scripts/package_teacher.py runs/quickstart-teacher

Writes the slimmed checkpoint (no optimizer state), its SHA-256 next to it, and
quickstart_teacher.json with the accuracy, epoch and the command that trained it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from sakd.engine.checkpoint import load_checkpoint, save_checkpoint, sha256_file
from sakd.engine.rundir import RunFolder

ASSETS = Path(__file__).resolve().parents[1] / "src" / "sakd" / "assets"


def _command(config: dict) -> str:
    """The command that trained the run (the recipe plus the overrides it was given)."""
    command = f"sakd train quickstart/teacher output_dir={config['output_dir']}"
    return command if config["progress"] else command + " progress=false"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--name", default="quickstart_teacher")
    args = parser.parse_args()
    data = load_checkpoint(args.run_dir / "checkpoints" / "best.pt")
    slim = {
        "config": data["config"],
        "phase_index": data["phase_index"],
        "epoch": data["epoch"],
        "modules": {"student": data["modules"]["student"]},
        "best_top1": data["best_top1"],
        "best_epoch": data["best_epoch"],
    }
    target = ASSETS / f"{args.name}.pt"
    save_checkpoint(target, slim)
    digest = sha256_file(target)
    (ASSETS / f"{args.name}.pt.sha256").write_text(f"{digest}  {target.name}\n")
    records = RunFolder(args.run_dir).read_records()
    info = {
        "model": data["config"]["model"]["name"],
        "dataset": data["config"]["data"]["name"],
        "best_top1": data["best_top1"],
        "best_epoch": data["best_epoch"] + 1,
        "last_top1": records[-1].test_top1,
        "epochs": len(records),
        "sha256": digest,
        "command": _command(data["config"]),
        "torch": torch.__version__,
    }
    (ASSETS / f"{args.name}.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info, indent=2), file=sys.stdout)


if __name__ == "__main__":
    main()
