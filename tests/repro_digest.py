"""Run the smoke study in a fresh ALIGNKIT_HOME and print the sha256 of every file that must not change when the
code changes no result: ``results.json`` and the data files of stages 01, 03 and 04.

    python tests/repro_digest.py --home /tmp/before --checkout /path/to/old/checkout --out before.json
    python tests/repro_digest.py --home /tmp/after --models-from /tmp/before --out after.json
    python tests/repro_digest.py --compare before.json after.json

``--checkout`` runs another checkout of alignkit (e.g. a git worktree of the commit before a refactoring) with this
machine's virtual environment; ``--models-from`` links the embedded base models built in another home, so the
second run does not build them again (the base build is deterministic and cached by its config). The run id is
the same in both runs, so ``results.json`` (which names its run) can be compared byte for byte. ``--compare``
exits 1 and names every file that differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_ID = "repro"
#: The files compared, as globs under the run folder.
PATTERNS = ("01_sft_data/*.jsonl", "03_negatives/seed*/*.jsonl", "04_preference_pairs/seed*/*.jsonl",
            "06_evaluation/results.json")


def digest(run_dir: Path) -> dict[str, str]:
    """``{path relative to the run folder: sha256}`` of the compared files."""
    out = {}
    for pattern in PATTERNS:
        for path in sorted(run_dir.glob(pattern)):
            out[str(path.relative_to(run_dir))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def run_smoke(home: Path, checkout: Path, models_from: Path | None, preset: str) -> Path:
    if models_from is not None and (models_from / "models").is_dir() and not (home / "models").exists():
        home.mkdir(parents=True, exist_ok=True)
        shutil.copytree(models_from / "models", home / "models", copy_function=os.link)
    env = dict(os.environ, ALIGNKIT_HOME=str(home), ALIGNKIT_REPORTS=str(home / "reports"), PYTHONPATH=str(checkout),
               HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    subprocess.run([sys.executable, "-m", "alignkit", "stage", "--preset", preset, "--run-id", RUN_ID], env=env,
                   cwd=checkout, check=True)
    return home / "runs" / RUN_ID


def compare(first: dict[str, str], second: dict[str, str]) -> list[str]:
    """The files that differ or exist on one side only.

    >>> compare({"a": "1", "b": "2"}, {"a": "1", "b": "3", "c": "4"})
    ['b: differs', 'c: only in the second']
    """
    problems = []
    for name in sorted(set(first) | set(second)):
        if name not in second:
            problems.append(f"{name}: only in the first")
        elif name not in first:
            problems.append(f"{name}: only in the second")
        elif first[name] != second[name]:
            problems.append(f"{name}: differs")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="a fresh ALIGNKIT_HOME for the run")
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the alignkit checkout to run (default: this)")
    parser.add_argument("--models-from", type=Path, help="link the base models built in this ALIGNKIT_HOME")
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--out", type=Path, help="write the digest here as JSON")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("FIRST", "SECOND"))
    args = parser.parse_args(argv)
    if args.compare:
        first, second = (json.loads(p.read_text()) for p in args.compare)
        problems = compare(first, second)
        print("\n".join(problems) if problems else f"identical: {len(first)} files")
        return 1 if problems else 0
    if args.home is None:
        parser.error("--home is required to run (or use --compare)")
    result = digest(run_smoke(args.home, args.checkout.resolve(), args.models_from, args.preset))
    text = json.dumps(result, indent=1, sort_keys=True)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
