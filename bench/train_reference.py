"""Build the reference detectors' model archives and print their per-scanner F1 on a held-out synthetic set.

    .venv/bin/python bench/train_reference.py --out worker/reference/archives
    .venv/bin/python bench/train_reference.py --out worker/reference/archives --evaluate-only

Both detectors see ONE synthetic scanner (scanner-0 by default): the classical one (colour deconvolution +
DoG) only for calibrating its response threshold, the CNN for training (CPU, two threads, a few minutes) and
calibration. The held-out set has every scanner; its cases never coincide with training/calibration cases.
The table shows the finding MIDOG is about: F1 drops on scanners the model never saw. Prints the command line
with the table so that bench/RESULTS.md can quote both.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from worker.datasets.synth import generate_test_set, graded_profiles
from worker.reference.scoring import score_archive
from worker.reference.training import TrainConfig, build_classical_archive, build_cnn_archive

DETECTORS = ("classical", "cnn", "cnn-augmented")


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("worker/reference/archives"), help="archives go to OUT/<name>")
    p.add_argument("--evaluate-only", action="store_true", help="score the archives already in --out")
    p.add_argument("--only", choices=DETECTORS, default=None, help="build this detector only (the others stay)")
    p.add_argument("--scanner", type=int, default=0, help="the one training scanner")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--time-budget", type=float, default=600.0, help="seconds of CNN training at most")
    p.add_argument("--train-cases", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scanners", type=int, default=4, help="scanners in the held-out set")
    p.add_argument("--eval-cases", type=int, default=5, help="held-out cases per scanner")
    p.add_argument("--eval-size", type=_size, default=(1024, 768), help="WxH of held-out cases")
    p.add_argument("--eval-seed", type=int, default=1)
    p.add_argument("--graded", type=float, default=None, metavar="REACH", help="held-out scanners graded as the demo's")
    p.add_argument("--json", type=Path, default=None, help="also write the per-scanner scores here")
    args = p.parse_args(argv)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    config = TrainConfig(
        scanner=args.scanner,
        steps=args.steps,
        time_budget_s=args.time_budget,
        train_cases=args.train_cases,
        seed=args.seed,
    )
    builders = {
        "classical": lambda out: build_classical_archive(out, config, say),
        "cnn": lambda out: build_cnn_archive(out, config, say),
        "cnn-augmented": lambda out: build_cnn_archive(out, replace(config, augment=True), say),
    }
    if not args.evaluate_only:
        for name in [args.only] if args.only else DETECTORS:
            t0 = time.monotonic()
            builders[name](args.out / name)
            say(f"{name} archive built in {time.monotonic() - t0:.0f}s")

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="reference-eval-") as tmp:
        held_out = Path(tmp) / "set"
        say(f"rendering the held-out set: {args.scanners} scanners x {args.eval_cases} cases")
        generate_test_set(
            held_out,
            scanners=graded_profiles(args.scanners, args.graded) if args.graded is not None else args.scanners,
            cases_per_scanner=args.eval_cases,
            size=args.eval_size,
            seed=args.eval_seed,
        )
        for name in DETECTORS:
            t0 = time.monotonic()
            report = score_archive(args.out / name, held_out, Path(tmp) / f"out-{name}")
            results[name] = {label: s.f1 for label, s in sorted(report.groups.items())}
            results[name]["overall"] = report.overall.f1
            say(f"{name}: scored in {time.monotonic() - t0:.0f}s")

    train_label = "scanner-A" if args.graded is not None else f"scanner-{args.scanner}"
    labels = sorted(k for k in results["cnn"] if k != "overall")
    print(f"command: {shlex.join(['python', 'bench/train_reference.py', *(argv or sys.argv[1:])])}")
    heads = [lab + (" (train)" if lab == train_label else "") for lab in labels]
    print(f"| detector | {' | '.join(heads)} | overall | in-domain minus worst |")
    print("|---" * (len(labels) + 3) + "|")
    for name in DETECTORS:
        row = results[name]
        others = [row[lab] for lab in labels if lab != train_label]
        gap = row[train_label] - min(others) if others else 0.0
        cells = " | ".join(f"{row[lab]:.3f}" for lab in labels)
        print(f"| {name} | {cells} | {row['overall']:.3f} | {gap:.3f} |")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
