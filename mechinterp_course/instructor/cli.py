"""``mechinterp-course``: the instructor's command line.

    mechinterp-course build [CHAPTER ...]                 regenerate chapters/ from solutions/ (nbgrader)
    mechinterp-course grade CHAPTER PATH ... [--out DIR]  autograde submitted notebooks
    mechinterp-course train NAME [--seed N]               rebuild a zoo model from its recipe
    mechinterp-course zoo                                 list the shipped models and their cards

Bad input (an unknown chapter or model, a path that does not exist, a folder with no notebooks) prints one line
saying what is wrong and what would be right, and exits with status 2, as argparse does for a bad option.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .build import CourseError

#: Exit status for bad input (argparse's own convention).
EXIT_BAD_INPUT = 2
#: Default output folder of ``grade``, relative to the working directory.
DEFAULT_GRADE_DIR = "grading"


def _parser() -> argparse.ArgumentParser:
    from .grade import DEFAULT_TIMEOUT_S
    from .sandbox import Limits

    limits = Limits()

    course_help = "the course root (default: the nearest parent of the working directory that has solutions/)"
    parser = argparse.ArgumentParser(
        prog="mechinterp-course",
        description="The mechinterp course's instructor tools: "
        "build the student notebooks, grade submissions, train and list zoo models.",
    )
    parser.add_argument("--course-dir", metavar="DIR", help=course_help)
    # Accepted after the subcommand too; SUPPRESS keeps a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--course-dir", metavar="DIR", default=argparse.SUPPRESS, help=course_help)
    commands = parser.add_subparsers(
        dest="command",
        metavar="COMMAND",
        required=True,
        parser_class=lambda **kw: argparse.ArgumentParser(parents=[common], **kw),
    )

    build = commands.add_parser(
        "build",
        help="regenerate chapters/ from solutions/ with nbgrader",
        description="Regenerate the student notebooks chapters/<chapter>/ from "
        "solutions/<chapter>/ (nbgrader generate_assignment).",
    )
    build.add_argument("chapters", nargs="*", metavar="CHAPTER", help="e.g. circuits or 01_circuits (default: all)")
    build.add_argument(
        "--missing",
        action="store_true",
        help="only chapters whose student notebook does not exist (never overwrites a student's work)",
    )

    grade = commands.add_parser(
        "grade",
        help="autograde submitted notebooks",
        description="Autograde submissions: notebooks, folders of notebooks (one per "
        "student, as downloaded from an LMS) or an nbgrader submitted/ tree.",
    )
    grade.add_argument("chapter", metavar="CHAPTER", help="e.g. circuits or 01_circuits")
    grade.add_argument("paths", nargs="+", metavar="PATH", help="notebooks or folders")
    grade.add_argument(
        "--out",
        default=DEFAULT_GRADE_DIR,
        metavar="DIR",
        help=f"where the gradebook, CSVs and feedback go (default: ./{DEFAULT_GRADE_DIR})",
    )
    grade.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"per-cell time limit in seconds (default: {DEFAULT_TIMEOUT_S})",
    )
    grade.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=None,
        metavar="N",
        help="notebooks graded at once (default: the number of cores)",
    )
    klass = grade.add_argument_group("the class (LMS downloads, roster, deadlines, feedback release)")
    klass.add_argument(
        "--roster",
        metavar="CSV",
        help="the class list: Canvas's or Moodle's gradebook export, or id,name,email[,extension]; files are "
        "matched to it, and students with no submission get 0",
    )
    klass.add_argument("--due", metavar="TIME", help="the due date, e.g. '2026-12-01 17:00' (in --timezone)")
    klass.add_argument(
        "--late-penalty",
        metavar="RULE",
        help="none (lateness recorded only; the default), zero, or N%%/day (of the score, per day or part of one)",
    )
    klass.add_argument(
        "--timestamps",
        metavar="CSV",
        help="submission times (columns student or file, and timestamp), overriding the times in the download",
    )
    klass.add_argument(
        "--timezone", metavar="ZONE", help="for --due and the download's times (default: this machine's)"
    )
    klass.add_argument("--exchange", metavar="DIR", help="nbgrader's exchange folder, for `nbgrader release_feedback`")
    klass.add_argument("--course-id", metavar="ID", help="nbgrader's course id in the exchange")
    box = grade.add_argument_group("limits on student code (per notebook)")
    box.add_argument(
        "--memory-mb",
        type=int,
        default=limits.memory_mb,
        metavar="MB",
        help=f"address space (default: {limits.memory_mb})",
    )
    box.add_argument(
        "--processes",
        type=int,
        default=limits.processes,
        metavar="N",
        help=f"processes and threads (default: {limits.processes})",
    )
    box.add_argument(
        "--file-mb",
        type=int,
        default=limits.file_mb,
        metavar="MB",
        help=f"largest file written (default: {limits.file_mb})",
    )
    box.add_argument(
        "--cpu-seconds",
        type=int,
        default=limits.cpu_seconds,
        metavar="S",
        help=f"CPU time of one kernel (default: {limits.cpu_seconds})",
    )
    box.add_argument(
        "--tmp-mb",
        type=int,
        default=limits.tmp_mb,
        metavar="MB",
        help=f"size of the private /tmp (default: {limits.tmp_mb})",
    )

    train = commands.add_parser(
        "train",
        help="rebuild a zoo model from its recipe",
        description="Train a zoo model from its recipe and write it into the zoo.",
    )
    train.add_argument("name", metavar="NAME", help="a recipe name (see `mechinterp-course zoo`)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    train.add_argument("--zoo-dir", metavar="DIR", help="write the model here instead of the package's zoo")

    commands.add_parser("zoo", help="list the shipped models", description="List the zoo's models with their cards.")
    return parser


def _build(args) -> None:
    from . import build as notebooks

    for path in notebooks.build(args.chapters or None, course_dir=args.course_dir, missing_only=args.missing):
        print(f"wrote {path}")


def _grade(args) -> None:
    from . import grade as autograde
    from .sandbox import Limits

    limits = Limits(
        memory_mb=args.memory_mb,
        processes=args.processes,
        file_mb=args.file_mb,
        cpu_seconds=args.cpu_seconds,
        tmp_mb=args.tmp_mb,
    )
    report = autograde.grade(
        args.chapter,
        args.paths,
        args.out,
        timeout=args.timeout,
        course_dir=args.course_dir,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
        jobs=args.jobs,
        limits=limits,
        roster=args.roster,
        due=args.due,
        late_penalty=args.late_penalty,
        timestamps=args.timestamps,
        timezone=args.timezone,
        exchange=args.exchange,
        course_id=args.course_id,
    )
    print(report.table())
    print()
    if report.protections:
        print("student code ran in a sandbox with:")
        for line in report.protections:
            print(f"  - {line}")
    print(f"gradebook: {report.gradebook}")
    print(f"grades:    {report.grades_csv}")
    print(f"problems:  {report.problems_csv}")
    print(f"questions: {report.out_dir / 'scores_by_question.csv'}")
    print(f"rubric:    {report.out_dir / 'rubric' / report.chapter}.md")
    print(f"feedback:  {report.out_dir / 'feedback'}/<student>/{report.chapter}/{report.chapter}.html")
    lms_files = sorted(p.name for p in (report.out_dir / "lms").glob("*")) if (report.out_dir / "lms").is_dir() else []
    if lms_files:
        print(f"for the LMS: {report.out_dir / 'lms'}/ ({', '.join(lms_files)})")
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if any(r.needs_manual_grade for r in report.students):
        print(f"Written answers need grading: run `jupyter lab` in {report.out_dir} and open the formgrader.")


def _format_metrics(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(metrics.items()))


def _train(args) -> None:
    from .. import recipes

    if args.name not in recipes.RECIPES:
        raise CourseError(f"Unknown recipe {args.name!r}. Recipes: {', '.join(sorted(recipes.RECIPES)) or 'none'}.")
    kwargs = {"zoo_dir": Path(args.zoo_dir)} if args.zoo_dir else {}
    model, card, seconds = recipes.build(args.name, seed=args.seed, progress=True, **kwargs)
    print(f"{args.name} (seed {args.seed}) trained in {seconds:.1f} s")
    print(f"metrics: {_format_metrics(card.get('metrics', {}))}")


def _zoo(args) -> None:
    from .. import models

    names = models.list_zoo()
    if not names:
        print("The zoo is empty.")
    for name in names:
        card = models.card(name)
        size = card.get("size_bytes")
        size_text = f"{size / 1024:.0f} kB" if isinstance(size, (int, float)) else "?"
        print(f"{name}: {card.get('n_params', '?')} parameters, {size_text}")
        if card.get("description"):
            print(f"    {card['description']}")
        if card.get("metrics"):
            print(f"    metrics: {_format_metrics(card['metrics'])}")


COMMANDS = {"build": _build, "grade": _grade, "train": _train, "zoo": _zoo}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except CourseError as error:
        print(f"mechinterp-course {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
