"""The ``sakd`` command: parse arguments, validate, call the library. No training logic here."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from typing import NoReturn

from sakd.errors import SakdError, SakdWarning, bounded

EXIT_USAGE = 2
EXIT_TERMINATED = 128 + signal.SIGTERM


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one ``sakd: error:`` line, the usage folded in."""

    def error(self, message: str) -> NoReturn:
        """Print the one line and exit with :data:`EXIT_USAGE`."""
        usage = " ".join(self.format_usage().split())
        self.exit(EXIT_USAGE, f"sakd: error: {message} ({usage}; `{self.prog} -h` for help)\n")


class Terminated(BaseException):
    """SIGTERM arrived: unwinds the run like Ctrl-C (atomic writes clean up after themselves)."""


def _cmd_train(args: argparse.Namespace) -> None:
    from sakd.config import load_config
    from sakd.engine.run import run

    cfg = load_config(args.config, args.overrides)
    if cfg.teacher is not None or cfg.distiller is not None:
        raise SakdError(f"{args.config!r} is a distillation recipe: run it with `sakd distill`")
    _report(run(cfg), cfg.output_dir)


def _cmd_distill(args: argparse.Namespace) -> None:
    from sakd.config import load_config
    from sakd.engine.run import run

    cfg = load_config(args.config, args.overrides)
    if cfg.teacher is None:
        raise SakdError(
            f"{args.config!r} has no teacher: set teacher.name and teacher.checkpoint "
            "(or train a single network with `sakd train`)"
        )
    _report(run(cfg), cfg.output_dir)


def _report(summary, output_dir: str) -> None:
    from sakd.engine.distributed import rank_and_world_size
    from sakd.engine.run import CompleteRunSummary

    if rank_and_world_size()[0] != 0:
        return
    if isinstance(summary, CompleteRunSummary):
        print(
            f"{output_dir} already holds this run, complete (best top-1 {summary.best_top1:.2f}%): "
            "nothing to do, nothing changed; resume=false would start it over"
        )
        return
    print(
        f"done: best top-1 {summary.best_top1:.2f}% (epoch {summary.best_epoch}), "
        f"last top-1 {summary.last_top1:.2f}%, {summary.seconds:.0f} s -> {output_dir}"
    )


def _cmd_eval(args: argparse.Namespace) -> None:
    from sakd.engine.evaluate_checkpoint import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, args.overrides, trust_code=args.trust_code)
    print(json.dumps(result, indent=2))


def _cmd_export(args: argparse.Namespace) -> None:
    from sakd.export import card_path, export

    path = export(
        args.run,
        args.out,
        checkpoint=args.checkpoint,
        format=args.format,
        trust_code=args.trust_code,
    )
    print(
        f"exported the {args.checkpoint} student of {args.run} -> {path} "
        f"(input contract: {card_path(path)})"
    )


def _cmd_models(args: argparse.Namespace) -> None:
    from sakd.models import create_model, list_models, model_aliases

    for name in list_models():
        if args.verbose:
            model = create_model(name, num_classes=100)
            params = sum(p.numel() for p in model.parameters()) / 1e6
            spots = ", ".join(f"{s.role}:{s.channels}" for s in model.spot_info(32))
            print(f"{name:20s} {params:7.2f}M  {spots}")
        else:
            print(name)
    aliases = " ".join(f"{alias}={name}" for alias, name in model_aliases().items())
    print(f"also accepted (RepDistiller's / mdistiller's names): {aliases}")


def _cmd_recipes(args: argparse.Namespace) -> None:
    from sakd.config import list_recipes

    for name in list_recipes():
        print(name)


def _cmd_distillers(args: argparse.Namespace) -> None:
    from sakd.config import published_weights
    from sakd.losses import PretrainParams, get_distiller, list_distillers

    tables = published_weights()
    for name in list_distillers():
        cls = get_distiller(name)
        defaults = cls.Params()
        epochs = defaults.pretrain_epochs if isinstance(defaults, PretrainParams) else 0
        extra = f" (+{epochs}-epoch pre-training)" if epochs else ""
        print(f"{name:8s} spots={cls.spot_role:11s} {cls.description}{extra}")
        params = ", ".join(f"{k}={v}" for k, v in defaults.model_dump().items()) or "none"
        weights = [
            f"{table} " + " ".join(f"{k}={v:g}" for k, v in row.model_dump().items())
            for table in tables
            if (row := cls.published_weights(table)) is not None
        ]
        print(f"{'':8s} params: {params}")
        print(f"{'':8s} published: {'; '.join(weights) or 'none (set the loss weights)'}")


def _cmd_quickstart(args: argparse.Namespace) -> None:
    from sakd.quickstart import quickstart

    quickstart(args.out, args.overrides)


def _cmd_reproduce(args: argparse.Namespace) -> None:
    from sakd.experiments.runner import Shard, reproduce

    shard = Shard.parse(args.shard) if args.shard else None
    reproduce(
        args.grid,
        args.overrides,
        shard=shard,
        out=args.out,
        dry_run=args.dry_run,
        teachers=args.teachers,
    )


def _cmd_report(args: argparse.Namespace) -> None:
    from pathlib import Path

    from sakd._autoload import stored_names
    from sakd.experiments.report import build_report, write_report

    # Each config.yaml is read as a stored config (its user code refused unless trusted here).
    trusted = stored_names(str(args.dir), trusted=True) if args.trust_code else nullcontext()
    with trusted:
        report = build_report(args.dir, grid=args.grid, overrides=args.overrides)
    out = Path(args.out) if args.out else report.root
    out.mkdir(parents=True, exist_ok=True)
    plots = []
    if args.plots and report.results:
        from sakd.experiments.plot import make_plots

        plots = make_plots(report, out / "plots")
    md_path, csv_path = write_report(report, plots, out)
    print(
        f"report: {len(report.results)} finished run(s), {len(report.problems)} problem(s) -> "
        f"{md_path}, {csv_path}" + (f", {len(plots)} figure(s)" if plots else "")
    )


def _cmd_inspect(args: argparse.Namespace) -> None:
    from sakd.experiments.inspect import inspect_run

    result = inspect_run(
        args.run,
        checkpoint=args.checkpoint,
        split=args.split,
        seed=args.seed,
        device=args.device,
        trust_code=args.trust_code,
    )
    print(result.summary)


def _cmd_plot(args: argparse.Namespace) -> None:
    from sakd.experiments.plot import plot_dir

    for path in plot_dir(args.dir, args.out):
        print(path)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sakd``."""
    parser = _Parser(
        prog="sakd", description="Spot-adaptive knowledge distillation (Song et al., TIP 2022)."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_overrides(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "overrides", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides"
        )

    def with_trust_code(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--trust-code",
            action="store_true",
            help="import the package.module:factory model the stored config names (runs its code)",
        )

    p = sub.add_parser("train", help="train one network (teacher or student baseline)")
    p.add_argument("config", help="YAML path or packaged recipe name (see `sakd recipes`)")
    with_overrides(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("distill", help="distil a student from a teacher")
    p.add_argument("config", help="YAML path or packaged recipe name (see `sakd recipes`)")
    with_overrides(p)
    p.set_defaults(func=_cmd_distill)

    p = sub.add_parser("eval", help="evaluate a checkpoint on a dataset")
    p.add_argument("checkpoint")
    with_overrides(p)
    with_trust_code(p)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser(
        "export", help="write a run's student weights in the model's own names (a state dict)"
    )
    p.add_argument("run", help="the run folder (its output_dir)")
    p.add_argument("--out", required=True, help="file to write, e.g. student.pt")
    p.add_argument(
        "--checkpoint",
        choices=["best", "last"],
        default="best",
        help="best (highest test top-1, default) or last",
    )
    with_trust_code(p)
    p.add_argument(
        "--format",
        choices=["pt", "onnx"],
        default="pt",
        help="pt (a state dict, default) or onnx (raw [0, 1] images in; needs sakd[onnx])",
    )
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("models", help="list the model zoo")
    p.add_argument("-v", "--verbose", action="store_true", help="with parameter counts and spots")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("recipes", help="list the packaged recipes")
    p.set_defaults(func=_cmd_recipes)

    p = sub.add_parser("distillers", help="list the distillers and the spots they use")
    p.set_defaults(func=_cmd_distillers)

    p = sub.add_parser("quickstart", help="the whole story on the embedded data, on the CPU")
    p.add_argument(
        "--out", default="runs/quickstart", help="output folder (default runs/quickstart)"
    )
    with_overrides(p)
    p.set_defaults(func=_cmd_quickstart)

    p = sub.add_parser(
        "reproduce", help="run a grid of runs (R1, R2, R3 or a grid file), resumably, in shards"
    )
    p.add_argument("grid", help="R1, R2, R3 (the paper's tables) or a grid YAML file")
    with_overrides(p)
    p.add_argument("--shard", metavar="I/N", help="run only the runs whose index %% N == I")
    p.add_argument("--out", help="root folder for the runs and teachers (default: here)")
    p.add_argument("--dry-run", action="store_true", help="validate and list the runs, run none")
    p.add_argument(
        "--teachers",
        metavar="DIR",
        help="folder of the published teachers (<name>_vanilla/ckpt_epoch_240.pth, as RepDistiller "
        "and mdistiller ship them): use them instead of training teachers",
    )
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser("report", help="aggregate the runs under DIR into report.md and report.csv")
    p.add_argument("dir", help="folder holding the runs (searched recursively)")
    p.add_argument(
        "--grid", help="the grid that made them (R1, R2, R3 or a file): shows missing runs"
    )
    p.add_argument("--plots", action="store_true", help="also write the figures into OUT/plots")
    p.add_argument("--out", help="folder for report.md, report.csv and plots/ (default DIR)")
    p.add_argument(
        "overrides",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="the grid's overrides (with --grid)",
    )
    with_trust_code(p)
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser(
        "inspect",
        help="where an adaptive run's policy distils, per sample and class -> RUN/inspect",
    )
    p.add_argument("run", help="the run folder (output_dir of a spots.mode=adaptive run)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--split", choices=("train", "test"), default="train")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled decisions (default 0)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: the run's device setting)")
    with_trust_code(p)
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("plot", help="PNG figures of the runs under DIR")
    p.add_argument("dir", help="folder holding the runs (searched recursively)")
    p.add_argument("--out", help="folder for the figures (default DIR/plots)")
    p.set_defaults(func=_cmd_plot)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line; ``KEY=VALUE`` overrides may also follow a command's options."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(x.startswith("-") or "=" not in x for x in extra):
            _command_parser(parser, args.command).error(
                f"unrecognized arguments: {' '.join(extra)}"
            )
        args.overrides = [*args.overrides, *extra]
    return args


def _command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The sub-parser of ``command`` (its usage names the command's own arguments)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    return parser


def _terminate(signum, frame) -> None:
    raise Terminated


def _distributed_timeout(exc: RuntimeError) -> str | None:
    """One line for a collective that timed out under torchrun (a hung or dead rank)."""
    from sakd.engine.distributed import (
        COLLECTIVE_TIMEOUT_ENV,
        collective_timeout,
        rank_and_world_size,
    )

    rank, world_size = rank_and_world_size()
    text = str(exc).lower()
    if world_size == 1 or not ("timed out" in text or "timeout" in text):
        return None
    return (
        f"rank {rank} of {world_size} waited {collective_timeout().total_seconds():.0f} s for the "
        "other ranks in a collective operation: another rank is hung or died (see its output); "
        f"run the same command again to resume ({COLLECTIVE_TIMEOUT_ENV}=SECONDS sets the limit)"
    )


def _one_line_warnings(show):
    """``warnings.showwarning`` printing sakd's own warnings as one ``sakd: warning:`` line.

    Other warnings go to ``show`` (what was installed before).
    """

    def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, SakdWarning):
            print(f"sakd: warning: {bounded(str(message))}", file=sys.stderr, flush=True)
        else:
            show(message, category, filename, lineno, file, line)

    return show_warning


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sakd`` console script; returns the exit status."""
    args = parse_args(argv)
    shown = warnings.showwarning
    warnings.showwarning = _one_line_warnings(shown)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread
        previous = None
    try:
        args.func(args)
    except SakdError as exc:
        print(f"sakd: error: {bounded(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("sakd: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Terminated:
        print(
            "sakd: terminated (SIGTERM); finished epochs are kept in the run's "
            "checkpoints/last.pt: run the same command again to resume",
            file=sys.stderr,
        )
        return EXIT_TERMINATED
    except OSError as exc:  # a safety net: the library turns the OS errors it expects into lines
        where = f" ({exc.filename})" if exc.filename else ""
        print(
            f"sakd: error: {exc.strerror or exc}{where}: check the path, its permissions and the "
            "free disk space",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except RuntimeError as exc:
        line = _distributed_timeout(exc)
        if line is None:
            raise
        print(f"sakd: error: {line}", file=sys.stderr)
        return 1
    finally:
        warnings.showwarning = shown
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
