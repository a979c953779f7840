"""What grading hands back: CSVs per question and for the LMS, feedback zips, the rubric, figures a grader can see.

Written into the grading folder by :func:`mechinterp_course.instructor.grade.grade` (all from the gradebook, so a
regrade or a manual grade entered in the formgrader shows up the next time they are written)::

    scores_by_question.csv          one row per student and graded cell: autograded, manual, final, max, pending
    lms/canvas_grades.csv           Canvas's gradebook import: Student, ID, SIS User ID, SIS Login ID, Section, score
    lms/moodle_grades.csv           Moodle's gradebook import (map "Email address" or "ID number"), with feedback text
    lms/canvas_feedback.zip         feedback files named as Canvas's download named the submissions (user id inside)
    lms/moodle_feedback.zip         feedback files in Moodle's "<Full Name>_<participant>_assignsubmission_file_" form
    lms/feedback.zip                every feedback file as <student id>.html, for any other LMS
    rubric/<chapter>.md, .json      every written question with its points, the model answer and the mark scheme

Two nbconvert preprocessors make the formgrader and the feedback show what a written answer discusses
(:class:`PlotlyFigures`, :class:`MarkSchemes`); ``grade`` names them in the grading folder's nbgrader_config.py.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from pathlib import Path

import nbformat
from nbconvert.preprocessors import Preprocessor
from traitlets import Unicode

PLOTLY_MIME = "application/vnd.plotly.v1+json"
MARK_SCHEME = re.compile(r"=== BEGIN MARK SCHEME ===\s*(.*?)\s*=== END MARK SCHEME ===", re.DOTALL)
SOLUTION = re.compile(r"### BEGIN SOLUTION\s*(.*?)\s*### END SOLUTION", re.DOTALL)


# --------------------------------------------------------------------------------------------------------------
# Figures and mark schemes where the grader reads (nbconvert preprocessors; configured in nbgrader_config.py)
# --------------------------------------------------------------------------------------------------------------


class PlotlyFigures(Preprocessor):
    """Give every plotly figure an HTML rendering, with plotly.js inlined once per page.

    Why: the course's figures are stored as plotly JSON (``application/vnd.plotly.v1+json``), which JupyterLab
    draws but nbconvert's HTML (the formgrader's view and the feedback files) leaves out, so a grader could not see
    the figure a written answer discusses ("pick one neuron from the figure"). The figure's data is the student's;
    plotly's own writer escapes it for a script tag.
    """

    def preprocess(self, nb, resources):
        import plotly.io as pio

        first = True
        for cell in nb.cells:
            for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
                data = output.get("data") or {}
                if PLOTLY_MIME not in data or "text/html" in data:
                    continue
                figure = data[PLOTLY_MIME]
                try:
                    html = pio.to_html(
                        dict(figure), include_plotlyjs=first, full_html=False, validate=False, default_height=450
                    )
                except Exception as error:  # noqa: BLE001 - a broken figure is the student's, not the page's
                    html = f"<p><em>(a plotly figure that could not be drawn: {type(error).__name__})</em></p>"
                data["text/html"] = html
                first = False
        return nb, resources


class MarkSchemes(Preprocessor):
    """In the formgrader's view only, show each written answer's mark scheme under the answer.

    The mark schemes live in the solution notebook (``=== BEGIN MARK SCHEME ===`` blocks); ``grade`` writes them to
    ``rubric/<chapter>.json``. The formgrader renders a submission with resources that carry a ``submission_id``;
    feedback files do not, so the students never see a scheme.
    """

    rubric_dir = Unicode("", help="the grading folder's rubric/ folder").tag(config=True)

    def preprocess(self, nb, resources):
        if "submission_id" not in resources or not self.rubric_dir:
            return nb, resources
        path = Path(self.rubric_dir) / f"{resources.get('assignment_id', '')}.json"
        try:
            rubric = {item["grade_id"]: item for item in json.loads(path.read_text())}
        except (OSError, ValueError, KeyError, TypeError):
            return nb, resources
        cells = []
        for cell in nb.cells:
            cells.append(cell)
            item = rubric.get((cell.get("metadata", {}).get("nbgrader") or {}).get("grade_id"))
            if item and item.get("scheme"):
                text = (
                    f"<div style='border-left:4px solid #c0392b;padding:0.3em 1em;background:#fdf2f0'>\n\n"
                    f"**Mark scheme** ({item['points']:g} points; shown to graders only)\n\n{item['scheme']}\n\n"
                    + (f"*Model answer:* {item['model_answer']}\n\n" if item.get("model_answer") else "")
                    + "</div>"
                )
                cells.append(nbformat.v4.new_markdown_cell(text))
        nb.cells = cells
        return nb, resources


# --------------------------------------------------------------------------------------------------------------
# The rubric
# --------------------------------------------------------------------------------------------------------------


def rubric(source: nbformat.NotebookNode) -> list[dict]:
    """Every manually graded cell of a solution notebook: its question (the text cell before it), points, model
    answer and mark scheme."""
    items = []
    for index, cell in enumerate(source.cells):
        meta = cell.get("metadata", {}).get("nbgrader") or {}
        if not (meta.get("grade") and meta.get("solution")) and not meta.get("task"):
            continue
        question = next(
            (c.source.strip() for c in reversed(source.cells[:index]) if c.cell_type == "markdown"),
            "",
        )
        scheme = MARK_SCHEME.search(cell.source)
        answer = MARK_SCHEME.sub("", cell.source)
        if cell.cell_type == "code":
            found = SOLUTION.search(answer)
            answer = found.group(1) if found else answer
        items.append(
            {
                "grade_id": meta["grade_id"],
                "points": float(meta.get("points", 0)),
                "question": question,
                "model_answer": answer.strip(),
                "scheme": scheme.group(1).strip() if scheme else "",
            }
        )
    return items


def write_rubric(source: nbformat.NotebookNode, chapter: str, out: Path) -> Path:
    """``rubric/<chapter>.json`` (read by :class:`MarkSchemes`) and ``rubric/<chapter>.md`` (for people)."""
    items = rubric(source)
    folder = out / "rubric"
    folder.mkdir(exist_ok=True)
    (folder / f"{chapter}.json").write_text(json.dumps(items, indent=1) + "\n")
    lines = [
        f"# Rubric · {chapter}",
        "",
        f"{len(items)} written answers, {sum(i['points'] for i in items):g} points.",
        "",
    ]
    for item in items:
        lines += [
            f"## {item['grade_id']} ({item['points']:g} points)",
            "",
            "**Question.** " + item["question"],
            "",
            "**Mark scheme.** " + (item["scheme"] or "(none written)"),
            "",
            "**Model answer.** " + (item["model_answer"] or "(none)"),
            "",
        ]
    path = folder / f"{chapter}.md"
    path.write_text("\n".join(lines))
    return path


# --------------------------------------------------------------------------------------------------------------
# CSVs from the gradebook
# --------------------------------------------------------------------------------------------------------------


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buffer.getvalue())


def _number(value) -> str:
    return "" if value is None else f"{float(value):g}"


def scores_by_question(gradebook, chapter: str, path: Path, rubric_ids: set[str]) -> None:
    """One row per student and graded cell. ``final`` is nbgrader's score (the manual score when a grader gave
    one, else the autograded one); ``pending`` is "yes" while a written answer (or an overridden score) still
    waits for a grader."""
    rows = []
    assignment = gradebook.find_assignment(chapter)
    for submission in sorted(assignment.submissions, key=lambda s: s.student.id):
        for notebook in submission.notebooks:
            for grade in sorted(notebook.grades, key=lambda g: g.cell.name):
                kind = "written" if grade.name in rubric_ids else "autograded"
                rows.append(
                    [
                        submission.student.id,
                        grade.name,
                        kind,
                        _number(grade.auto_score),
                        _number(grade.manual_score),
                        _number(grade.extra_credit),
                        _number(grade.score),
                        _number(grade.max_score),
                        "yes" if grade.needs_manual_grade else "no",
                    ]
                )
            if notebook.late_submission_penalty:
                rows.append(
                    [
                        submission.student.id,
                        "late_penalty",
                        "penalty",
                        "",
                        "",
                        "",
                        _number(-notebook.late_submission_penalty),
                        "",
                        "no",
                    ]
                )
    header = [
        "student_id",
        "question",
        "kind",
        "autograded",
        "manual",
        "extra_credit",
        "final",
        "max",
        "pending_manual",
    ]
    _write_csv(path, header, rows)


def _final(submission) -> tuple[float, float]:
    """Score after any late penalty, and the maximum."""
    penalty = sum(nb.late_submission_penalty or 0 for nb in submission.notebooks)
    return submission.score - penalty, submission.max_score


def _canvas_login(student) -> str:
    """Canvas's name part of a download's file names: last name then first name, lower case, letters only."""
    return re.sub(r"[^a-z0-9]", "", f"{student.last_name}{student.first_name}".lower()) or "student"


def lms_uploads(gradebook, chapter: str, out: Path, submissions, feedback_for) -> list[str]:
    """The LMS files (module docstring); returns notes for students who could not be given a row or a file.

    ``submissions`` are the collected :class:`~mechinterp_course.instructor.lms.Submission` records of this run and
    earlier ones (their roster entries and LMS names); ``feedback_for(student_id)`` is a feedback file or None."""
    notes: list[str] = []
    folder = out / "lms"
    folder.mkdir(exist_ok=True)
    assignment = gradebook.find_assignment(chapter)
    scored = {s.student.id: s for s in assignment.submissions}
    canvas_rows, moodle_rows = [], []
    feedback_files: dict[str, list[tuple[str, Path]]] = {"canvas": [], "moodle": [], "plain": []}
    max_score = assignment.max_score
    for sub in sorted(submissions, key=lambda s: s.student_id):
        record = scored.get(sub.student_id)
        if record is None:
            continue
        score, _ = _final(record)
        roster = sub.student
        pending = any(g.needs_manual_grade for nb in record.notebooks for g in nb.grades)
        comment = f"{score:g}/{max_score:g}" + (" (written answers not graded yet)" if pending else "")
        canvas_id = (roster.lms_id if roster else "") or (sub.canvas[1] if sub.canvas else "")
        full_name = " ".join(n for n in (roster.first_name, roster.last_name) if n) if roster else ""
        name = full_name or (roster.name if roster else "") or (sub.moodle[0] if sub.moodle else "") or sub.student_id
        if canvas_id:
            canvas_rows.append(
                [
                    f"{roster.last_name}, {roster.first_name}" if roster and roster.last_name else name,
                    canvas_id,
                    roster.sis_id if roster else "",
                    roster.login if roster else "",
                    roster.section if roster else "",
                    f"{score:g}",
                ]
            )
        email = roster.email if roster else ""
        id_number = roster.lms_id if roster else ""
        if email or id_number or sub.moodle:
            moodle_rows.append(
                [
                    f"Participant {sub.moodle[1]}" if sub.moodle else "",
                    name,
                    email,
                    id_number,
                    f"{score:g}",
                    f"{max_score:g}",
                    comment,
                ]
            )
        feedback = feedback_for(sub.student_id)
        if feedback is None:
            continue
        feedback_files["plain"].append((f"{sub.student_id}.html", feedback))
        if sub.canvas or canvas_id:
            login = (
                sub.canvas[0]
                if sub.canvas
                else re.sub(r"[^a-z0-9]", "", f"{roster.last_name}{roster.first_name}".lower())
            )
            submission_id = sub.canvas[2] if sub.canvas else "0"
            feedback_files["canvas"].append((f"{login}_{canvas_id}_{submission_id}_{chapter}_feedback.html", feedback))
        if sub.moodle:
            feedback_files["moodle"].append(
                (f"{sub.moodle[0]}_{sub.moodle[1]}_assignsubmission_file_{chapter}_feedback.html", feedback)
            )
        elif roster and (roster.email or roster.name) and any(s.moodle for s in submissions):
            notes.append(
                f"{sub.student_id}: no Moodle participant id (no submission downloaded), no Moodle feedback file"
            )
    title = f"{chapter}"
    if canvas_rows:
        header = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", title]
        _write_csv(
            folder / "canvas_grades.csv", header, [["Points Possible", "", "", "", "", f"{max_score:g}"], *canvas_rows]
        )
    if moodle_rows:
        header = [
            "Identifier",
            "Full name",
            "Email address",
            "ID number",
            "Grade",
            "Maximum grade",
            "Feedback comments",
        ]
        _write_csv(folder / "moodle_grades.csv", header, moodle_rows)
    for kind, files in feedback_files.items():
        if (
            not files
            or (kind == "canvas" and not canvas_rows)
            or (kind == "moodle" and not any(s.moodle for s in submissions))
        ):
            continue
        name = {"canvas": "canvas_feedback.zip", "moodle": "moodle_feedback.zip", "plain": "feedback.zip"}[kind]
        with zipfile.ZipFile(folder / name, "w", zipfile.ZIP_DEFLATED) as archive:
            for arcname, path in sorted(files):
                archive.write(path, arcname)
    return notes
