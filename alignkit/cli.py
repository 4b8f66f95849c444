"""The ``alignkit`` command line; every command calls the same package functions the notebooks call.

    alignkit run --preset smoke                    # all notebooks, papermill, HTML into reports/<run_id>/
    alignkit config show --preset tiny -p sft.epochs=2
    alignkit build-base --preset tiny
    alignkit evalset --preset tiny --out eval_items.jsonl
    alignkit validate FILE --kind pairs
    alignkit inspect-masks --model DIR --data sft.jsonl
    alignkit score --items eval_items.jsonl --responses responses.jsonl --out scores.jsonl
    alignkit sweep --preset tiny --grid dpo.beta=0.05,0.1 --select dev:overall
    alignkit sweep --preset smoke --suite mix
    alignkit plan --preset all --gpu-memory 80        # peak GPU memory per stage, and whether it fits
    alignkit selftest --gpu                           # on a pod: the real-model path shrunk to a few steps
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from alignkit.config import ConfigError

log = logging.getLogger("alignkit")


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="tiny", help="preset name (default: tiny); see `alignkit config presets`")
    parser.add_argument("--config", dest="config_file", help="user YAML config layered over the preset")
    parser.add_argument("-p", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. -p sft.epochs=2 (repeatable; wins over --config)")


def _resolve(args: argparse.Namespace):
    from alignkit.config import resolve

    return resolve(args.preset, args.config_file, args.overrides)


def cmd_run(args: argparse.Namespace) -> int:
    from alignkit.runner import run_notebooks

    results = run_notebooks(args.preset, config_file=args.config_file, overrides=args.overrides,
                            stages=args.stages, run_id=args.run_id, force=args.force, progress=not args.quiet,
                            verbose=args.verbose)
    if results:
        folder = results[-1].html.parent
        report = folder / "report.html"
        if (folder / "results.json").is_file():
            from alignkit import files

            print(files.read_json(folder / "results.json").get("headline", ""))
        print(f"report: {report}" if report.exists() else f"notebook exports: {folder}")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    from alignkit.config import dump_yaml, help_keys

    if args.help_keys:  # what every key means, its type and default: no preset needed
        print(help_keys())
        return 0
    print(dump_yaml(_resolve(args)), end="")
    return 0


def cmd_config_presets(_args: argparse.Namespace) -> int:
    from alignkit.config import available_presets

    print("\n".join(available_presets()))
    return 0


def cmd_build_base(args: argparse.Namespace) -> int:
    from alignkit import files
    from alignkit.config import EMBEDDED_BASES
    from alignkit.world import tinybase

    cfg = _resolve(args)
    if not cfg.embedded_base:
        raise ConfigError(f"model.base: {cfg.model.base!r} is not an embedded base model; build-base builds "
                          f"only {', '.join(EMBEDDED_BASES)}")
    folder = tinybase.ensure_base(cfg, force=args.force)
    manifest = files.read_json(folder / "manifest.json")
    print(f"{folder}: {manifest['parameters'] / 1e6:.2f}M parameters, built in {manifest['build_seconds']} s, "
          f"held-out perplexity {manifest['heldout_perplexity']}, few-shot accuracy "
          f"{manifest['few_shot']['overall']:.2f} ({manifest['few_shot']['per_family']})")
    return 0


def cmd_evalset(args: argparse.Namespace) -> int:
    from alignkit import files, world

    cfg = _resolve(args)
    items = world.heldout_items(cfg.seed, cfg.world.n_eval, cfg.world.families)
    count = files.write_jsonl(args.out, (item.to_record() for item in items))
    print(f"{args.out}: {count} held-out items over {len(cfg.world.families)} families (seed {cfg.seed})")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from alignkit.schemas import validate_command

    return validate_command(args.file, args.kind)


def cmd_inspect_masks(args: argparse.Namespace) -> int:
    from alignkit import masks
    from alignkit.config import ModelSettings
    from alignkit.modeling import load_tokenizer
    from alignkit.schemas import load_records

    rows = load_records(args.data, "sft")  # FILE:LINE: field: problem for a malformed file, before any model
    if not Path(args.model).exists() and (Path(args.model).is_absolute() or str(args.model).startswith(".")):
        raise FileNotFoundError(f"--model {args.model}: no such folder; give a model folder (e.g. "
                                "runs/<run_id>/02_sft_training/seed0/model) or a Hub id")
    tokenizer = load_tokenizer(args.model, ModelSettings(base=str(args.model), trust_remote_code=args.trust_remote_code))
    results = masks.check_dataset(tokenizer, rows)
    for (row_id, check) in results[: args.n]:
        print(f"--- {row_id}: {'ok' if check.ok else 'FAIL: ' + check.problem}")
        print(check.marked(tokenizer))
    failures = [(row_id, check) for row_id, check in results if not check.ok]
    for row_id, check in failures:
        print(f"{args.data}: {row_id}: {check.problem}", file=sys.stderr)
    print(f"{len(results) - len(failures)} of {len(results)} examples train exactly completion + EOS "
          f"(trained tokens shown in [[ ]])")
    return 1 if failures else 0


def cmd_score(args: argparse.Namespace) -> int:
    from alignkit.eval import scoring

    summary = scoring.score_file(args.items, args.responses, args.out)
    for model, rates in summary.items():
        shown = ", ".join(f"{k}={v:.2f}" for k, v in rates.items() if v is not None)
        print(f"{model}: {shown}")
    print(f"scores written to {args.out}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from alignkit import doctor

    return doctor.main(["--preset", args.preset] if args.preset else [])


def cmd_summary(args: argparse.Namespace) -> int:
    from alignkit import summary

    return summary.main(args)


def cmd_sweep(args: argparse.Namespace) -> int:
    from alignkit import sweep

    return sweep.main(args)


def cmd_stage(args: argparse.Namespace) -> int:
    """Run stages directly in this process (no notebooks): for scripts, torchrun and debugging."""
    from alignkit import runs
    from alignkit.lock import run_lock
    from alignkit.stages import registry

    run = runs.open_run(args.preset, args.config_file, args.overrides, args.run_id)
    with run_lock(run.dir, f"alignkit stage --stages {args.stages}"):
        results = {stage: registry.run_stage(run, stage, force=args.force) for stage in runs.stage_range(args.stages)}
    for stage, result in results.items():
        per_seed = result if "status" not in result else {None: result}
        for seed, manifest in per_seed.items():
            where = "" if seed is None else f" seed {seed}"
            print(f"{stage}{where}: {manifest['status']} ({manifest.get('seconds')} s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alignkit", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute the stage notebooks with papermill and export the report")
    _add_config_args(run)
    run.add_argument("--stages", default="all", help="e.g. 01-06, 02, 1,3 (default: all)")
    run.add_argument("--run-id", help="run folder name (default: the preset name)")
    run.add_argument("--force", action="store_true", help="redo stages even when their cache is valid")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=cmd_run)

    config = sub.add_parser("config", help="show the resolved config or the presets")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    show = config_sub.add_parser("show", help="print the resolved config as YAML")
    _add_config_args(show)
    show.add_argument("--help-keys", action="store_true",
                      help="list every config key with its type, default and a one-line help")
    show.set_defaults(func=cmd_config_show)
    config_sub.add_parser("presets", help="list the shipped presets").set_defaults(func=cmd_config_presets)

    base = sub.add_parser("build-base", help="build (or reuse) the embedded tiny base model")
    _add_config_args(base)
    base.add_argument("--force", action="store_true", help="rebuild even if a matching build exists")
    base.set_defaults(func=cmd_build_base)

    evalset = sub.add_parser("evalset", help="write the held-out evaluation items as JSONL")
    _add_config_args(evalset)
    evalset.add_argument("--out", required=True, type=Path)
    evalset.set_defaults(func=cmd_evalset)

    validate = sub.add_parser("validate", help="check a JSONL file; prints FILE:LINE: field: problem per defect")
    validate.add_argument("file", type=Path)
    validate.add_argument("--kind", required=True, choices=["eval-items", "sft", "negatives", "pairs", "responses"])
    validate.set_defaults(func=cmd_validate)

    inspect = sub.add_parser("inspect-masks", help="show which tokens SFT trains on; non-zero exit on a wrong mask")
    inspect.add_argument("--model", required=True, help="model folder or Hub id (its tokenizer is used)")
    inspect.add_argument("--data", required=True, type=Path, help="JSONL with prompt and completion fields")
    inspect.add_argument("-n", type=int, default=3, help="examples to print (all are checked)")
    inspect.add_argument("--trust-remote-code", action="store_true")
    inspect.set_defaults(func=cmd_inspect_masks)

    score = sub.add_parser("score", help="score any responses JSONL against held-out items (nine criteria)")
    score.add_argument("--items", required=True, type=Path, help="eval items JSONL (alignkit evalset)")
    score.add_argument("--responses", required=True, type=Path,
                       help="responses JSONL: item_id and raw_output (or response + emitted_end); model optional")
    score.add_argument("--out", required=True, type=Path)
    score.set_defaults(func=cmd_score)

    doctor_parser = sub.add_parser("doctor", help="check torch/CUDA/GPU/bf16/bitsandbytes/disk/HF_HOME and the "
                                                  "memory plan on this GPU")
    from alignkit import doctor, plan, selftest

    doctor.add_arguments(doctor_parser)
    doctor_parser.set_defaults(func=cmd_doctor)
    for name, module, help_ in (
            ("plan", plan, "estimate the peak GPU memory of every stage of a preset"),
            ("selftest", selftest, "the GPU check: the whole study, tiny, measured against the plan")):
        command = sub.add_parser(name, help=help_)
        module.add_arguments(command)
        command.set_defaults(func=module.command)

    summary = sub.add_parser("summary", help="what a finished run measured, as the README's Markdown table")
    _add_config_args(summary)
    summary.add_argument("--run-id", help="run folder name (default: the preset name)")
    summary.set_defaults(func=cmd_summary)

    sweep = sub.add_parser("sweep", help="a grid of -p overrides or a shipped suite, one run per point")
    _add_config_args(sweep)
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                       help="one swept key and its values (repeatable: the grid is their product)")
    sweep.add_argument("--suite", help="a shipped experiment (alignkit/suites/NAME.yaml): masking, mix, sft_size, "
                                       "dpo_loss, leave_one_type_out")
    sweep.add_argument("--select", metavar="dev:ENDPOINT[:ARM]",
                       help="evaluate the points on the dev split and write the winner's overrides to selected.yaml")
    sweep.add_argument("--sweep-id", help="prefix of the points' run ids and the report folder")
    sweep.add_argument("--dry-run", action="store_true", help="print the cost (runs, cached stages, time) and stop")
    sweep.add_argument("--force", action="store_true")
    sweep.set_defaults(func=cmd_sweep)

    stage = sub.add_parser("stage", help="run stages in this process without notebooks (scripts, torchrun)")
    _add_config_args(stage)
    stage.add_argument("--stages", default="all")
    stage.add_argument("--run-id")
    stage.add_argument("--force", action="store_true")
    stage.set_defaults(func=cmd_stage)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from alignkit import threads

    threads.log_once()
    try:
        return args.func(args)
    except BrokenPipeError:  # `alignkit ... | head`: the reader left; not an error of ours
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps Python's exit-time flush from raising again
        return 0
    except ConfigError as error:
        print(f"alignkit: config error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # one clear line for known failures; tracebacks with -v
        from alignkit.disk import DiskSpaceError
        from alignkit.files import WriteFailed
        from alignkit.lock import RunLockedError
        from alignkit.runner import NotebookFailed
        from alignkit.runs import StageInputError
        from alignkit.schemas import InvalidInputError

        known = (NotebookFailed, StageInputError, FileNotFoundError, RunLockedError, WriteFailed, DiskSpaceError,
                 InvalidInputError)
        if isinstance(error, known) and not args.verbose:
            print(f"alignkit: {error}", file=sys.stderr)
            return 1
        raise
