"""A class from an LMS download to the LMS upload: Canvas and Moodle layouts, a roster, deadlines, the outputs.

The file-level tests build each LMS's layout (Canvas's flat names with LATE and re-submission marks, Moodle's folders
and flat files, a browser's `` (1)``, zips) from the fixture chapter's notebooks and check who each file is given to,
with no kernel. One batch (``klass``) then grades a small class end to end, once: four notebooks run, the others
(no submission, a PDF, another chapter's notebook) are graded without running anything. Its tests read the
gradebook and the files written for the LMS.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest
from test_grading import CHAPTER, FIXTURES, RIGHT

from mechinterp_course.instructor import build, grade, lms, outputs
from mechinterp_course.instructor.build import CourseError

ROOT = Path(__file__).resolve().parents[1]
OTHER_CHAPTER = ROOT / "chapters" / "00_history" / "00_history.ipynb"
UTC = dt.UTC
DUE = "2026-11-20 17:00"
TIMEOUT_S = 15


def make_course(tmp: Path) -> Path:
    """The fixture chapter built as a course, with chapter 00's student notebook beside it (to be recognised)."""
    course = tmp / "course"
    shutil.copytree(FIXTURES / "solutions", course / "solutions")
    build.build(course_dir=course)
    (course / "chapters" / "00_history").mkdir(parents=True)
    shutil.copy(OTHER_CHAPTER, course / "chapters" / "00_history")
    return course


def released(course: Path) -> nbformat.NotebookNode:
    return nbformat.read(course / "chapters" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)


def solved(course: Path, **answers) -> str:
    nb = released(course)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in RIGHT or grade_id in answers:
            cell.source = answers.get(grade_id, RIGHT.get(grade_id))
    return nbformat.writes(nb)


def write_zip(path: Path, entries: dict[str, tuple[str | bytes, str]]) -> Path:
    """A zip of ``name -> (content, 'YYYY-MM-DD HH:MM')``: the time is what the LMS recorded."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, (content, when) in entries.items():
            info = zipfile.ZipInfo(name, date_time=dt.datetime.fromisoformat(when).timetuple()[:6])
            archive.writestr(info, content)
    return path


ROSTER = """Student,ID,SIS User ID,SIS Login ID,Section,Email,Extension
Points Possible,,,,,,
"Adams, Ann",1001,S1,aadams,A,ann@uni.edu,
"Brown, Ben",1002,S2,bbrown,A,ben@uni.edu,
"Chen, Cy",1003,S3,cchen,B,cy@uni.edu,2d
"Diaz, Dee",1004,S4,ddiaz,B,dee@uni.edu,
"Evans, Eve",1005,S5,eevans,B,eve@uni.edu,
"Gray, Gus",1006,S6,ggray,B,gus@uni.edu,
"""


# --------------------------------------------------------------------------------------------------------------
# Files to students (no kernels)
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    return make_course(tmp_path_factory.mktemp("lms-course"))


def _releases(course: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (course / "chapters").glob("*/*.ipynb")}


def test_canvas_names_marks_and_redownloads(course, tmp_path):
    notebook = solved(course)
    download = write_zip(
        tmp_path / "submissions.zip",
        {
            f"adamsann_1001_555001_{CHAPTER}.ipynb": (notebook, "2026-11-20 10:00"),
            f"adamsann_1001_555001_{CHAPTER}-1.ipynb": (notebook, "2026-11-20 12:00"),  # re-submitted
            f"brownben_LATE_1002_555002_{CHAPTER}.ipynb": (notebook, "2026-11-21 19:00"),
            f"brownben_LATE_1002_555002_{CHAPTER} (1).ipynb": (notebook, "2026-11-21 19:00"),  # downloaded twice
            "chency_1003_555003_report.pdf": (b"%PDF-1.4", "2026-11-20 09:00"),
            "__MACOSX/._adamsann_1001_555001_01_circuits.ipynb": (b"junk", "2026-11-20 09:00"),
        },
    )
    got = lms.collect([download], CHAPTER, tmp_path / "work", _releases(course), zone=UTC)
    by_id = {s.student_id: s for s in got.submissions}
    assert sorted(by_id) == ["adamsann_1001", "brownben_1002", "chency_1003"]  # no submission id, no LATE, no (1)
    ann = by_id["adamsann_1001"]
    assert ann.path.name == f"adamsann_1001_555001_{CHAPTER}-1.ipynb"  # the newest
    assert ann.timestamp == dt.datetime(2026, 11, 20, 12, 0) and not ann.late_mark
    assert any("graded the newest of 2" in p for p in ann.problems)
    assert ann.canvas == ("adamsann", "1001", "555001")
    ben = by_id["brownben_1002"]
    assert ben.late_mark and ben.path is not None and "Canvas marked this submission LATE" in ben.problems
    assert by_id["chency_1003"].path is None
    assert by_id["chency_1003"].problems == [
        "submissions.zip/chency_1003_555003_report.pdf is a PDF, not a notebook: not graded"
    ]


def test_moodle_folders_and_flat_files_matched_to_the_roster_by_name(course, tmp_path):
    roster_path = tmp_path / "moodle_roster.csv"
    roster_path.write_text(
        "First name,Last name,ID number,Email address\nAnn,Adams,1001,ann@uni.edu\nZoë,O'Neil,1007,zoe@uni.edu\n"
        "Ben,Brown,1002,ben@uni.edu\n"
    )
    roster = lms.read_roster(roster_path)
    assert [s.student_id for s in roster] == ["1001", "1007", "1002"] and roster[1].name == "Zoë O'Neil"
    download = tmp_path / "moodle"
    folder = download / "Ann Adams_88001_assignsubmission_file_"
    folder.mkdir(parents=True)
    (folder / f"{CHAPTER}.ipynb").write_text(solved(course))
    (download / f"Zoe ONeil_88002_assignsubmission_file_{CHAPTER}.ipynb").write_text(solved(course))
    (download / "Ann Adams_88001_assignsubmission_onlinetext_onlinetext.html").write_text("<p>hi</p>")
    (download / "Somebody Else_88009_assignsubmission_file_x.ipynb").write_text(solved(course))
    got = lms.collect([download], CHAPTER, tmp_path / "work", _releases(course), roster=roster)
    by_id = {s.student_id: s for s in got.submissions}
    assert by_id["1001"].path == folder / f"{CHAPTER}.ipynb" and by_id["1001"].moodle == ("Ann Adams", "88001")
    assert any("an HTML page, not a notebook" in p for p in by_id["1001"].problems)
    assert by_id["1007"].path is not None  # accents and apostrophes do not matter
    assert by_id["1002"].path is None and by_id["1002"].problems == ["no submission"]
    assert [file for file, _ in got.unmatched] == ["moodle/Somebody Else_88009_assignsubmission_file_x.ipynb"]
    assert "no student in the roster matches" in got.unmatched[0][1]


def test_plain_folder_another_chapter_and_a_tree(course, tmp_path):
    download = tmp_path / "class"
    download.mkdir()
    (download / f"Jane Doe - {CHAPTER}.ipynb").write_text(solved(course))
    (download / f"Jane Doe - {CHAPTER} (2).ipynb").write_text(solved(course))
    (download / f"kim_{CHAPTER}.ipynb").write_bytes(OTHER_CHAPTER.read_bytes())  # chapter 00 handed in as 01
    (download / "lee.py").write_text("print('my answers')")
    got = lms.collect([download], CHAPTER, tmp_path / "work", _releases(course))
    by_id = {s.student_id: s for s in got.submissions}
    assert sorted(by_id) == ["Jane_Doe", "kim", "lee"]  # the (2) copy is the same student
    assert by_id["Jane_Doe"].path.name == f"Jane Doe - {CHAPTER} (2).ipynb"
    assert by_id["kim"].path is None
    assert by_id["kim"].problems == [
        f"class/kim_{CHAPTER}.ipynb is the notebook of chapter 00_history, not {CHAPTER}: not graded"
    ]
    assert by_id["lee"].problems == ["class/lee.py is a Python script, not a notebook: not graded"]

    wrapped = write_zip(  # a zip of the folder, not of its files
        tmp_path / "class.zip",
        {
            f"class/ann_{CHAPTER}.ipynb": (solved(course), "2026-11-20 10:00"),
            "class/bo.ipynb": ("{}", "2026-11-20 10:00"),
        },
    )
    got = lms.collect([wrapped], CHAPTER, tmp_path / "work", _releases(course))
    assert [(s.student_id, s.origin) for s in got.submissions] == [
        ("ann", f"class.zip/class/ann_{CHAPTER}.ipynb"),
        ("bo", "class.zip/class/bo.ipynb"),
    ]

    tree = tmp_path / "collected" / "submitted" / "mo" / CHAPTER
    tree.mkdir(parents=True)
    (tree / f"{CHAPTER}.ipynb").write_text(solved(course))
    (tree / "timestamp.txt").write_text("2026-11-20 16:00:00.000000 UTC")
    (tree / "submission_secret.txt").write_text("s3cret")
    got = lms.collect([tmp_path / "collected"], CHAPTER, tmp_path / "work", _releases(course))
    (mo,) = got.submissions
    assert mo.student_id == "mo" and mo.timestamp == dt.datetime(2026, 11, 20, 16, 0)
    assert sorted(mo.extra) == ["submission_secret.txt", "timestamp.txt"]


@pytest.mark.parametrize(
    "filename, expected",
    [
        ("smith_john_12345_67890_01_circuits.ipynb", "smith_john_12345_67890"),
        ("Jane Doe - 01_circuits (1).ipynb", "Jane_Doe"),
        ("01_circuits.ipynb", "01_circuits"),
        ("circuitsfan_42.ipynb", "circuitsfan_42"),
        ("***.ipynb", "student"),
    ],
)
def test_student_id_from_filename(filename, expected):
    assert lms.student_id_from_filename(filename, "01_circuits") == expected


def test_bad_rosters_zips_and_options_get_clear_errors(course, tmp_path):
    for text, message in [
        ("Colour,Size\nred,1\n", "no id, name or e-mail column"),
        ("id,name\n1,Ann\n1,Ben\n", "same id '1'"),
        ("id,name\n", "no students"),
        ("id,name,extension\n1,Ann,2026-12-01 10:00\n", "give the assignment's due date"),
    ]:
        path = tmp_path / "roster.csv"
        path.write_text(text)
        with pytest.raises(CourseError, match=message):
            lms.read_roster(path)
    with pytest.raises(CourseError, match="no such roster"):
        lms.read_roster(tmp_path / "missing.csv")
    evil = write_zip(tmp_path / "evil.zip", {"../../escape.ipynb": ("{}", "2026-11-20 10:00")})
    with pytest.raises(CourseError, match="refuses to extract"):
        lms.collect([evil], CHAPTER, tmp_path / "work")
    assert not (tmp_path / "escape.ipynb").exists()
    (tmp_path / "fake.zip").write_text("not a zip")
    with pytest.raises(CourseError, match="not a zip file"):
        grade.grade(CHAPTER, [tmp_path / "fake.zip"], tmp_path / "out", course_dir=course)
    with pytest.raises(CourseError, match="late-penalty"):
        lms.check_penalty("a lot")
    with pytest.raises(CourseError, match="Unknown time zone"):
        lms.timezone("Mars/Olympus")
    with pytest.raises(CourseError, match="not a date and time"):
        lms.parse_time("next friday", UTC)
    assert not (tmp_path / "out").exists()


def test_extensions_and_the_percent_penalty():
    due = dt.datetime(2026, 11, 20, 17)
    assert lms.parse_extension("48", due, UTC)[0] == dt.timedelta(hours=48)
    assert lms.parse_extension("2d", due, UTC)[0] == dt.timedelta(days=2)
    assert lms.parse_extension("2026-11-21 17:00", due, UTC)[0] == dt.timedelta(days=1)
    assert lms.parse_time("2026-11-20 18:00+01:00", UTC) == due
    plugin = lms.PercentPerDay(percent=10)
    assert plugin.late_submission_penalty("x", 4.0, 1) == pytest.approx(0.4)  # part of a day counts as a day
    assert plugin.late_submission_penalty("x", 4.0, 86400 + 1) == pytest.approx(0.8)
    assert plugin.late_submission_penalty("x", 4.0, 30 * 86400) == 4.0  # never more than the score


def test_figures_and_mark_schemes_in_the_html_a_grader_reads(course, tmp_path):
    nb = released(course)
    figure = {"data": [{"type": "bar", "x": ["L0H0"], "y": [1], "name": "</script><script>alert(1)</script>"}]}
    cell = nbformat.v4.new_code_cell("fig")
    cell.outputs = [nbformat.v4.new_output("display_data", data={outputs.PLOTLY_MIME: figure, "text/plain": "Figure"})]
    nb.cells += [cell, nbformat.from_dict(json.loads(json.dumps(cell)))]
    source = nbformat.read(course / "solutions" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    outputs.write_rubric(source, CHAPTER, tmp_path)
    rubric_dir = tmp_path / "rubric"
    (item,) = json.loads((rubric_dir / f"{CHAPTER}.json").read_text())
    assert item["grade_id"] == "answer-hidden" and item["points"] == 2 and "hard-coded" in item["scheme"]
    assert "The figure above" in item["question"] and "MARK SCHEME" not in item["model_answer"]

    from nbconvert import HTMLExporter
    from traitlets.config import Config

    config = Config()
    config.HTMLExporter.preprocessors = [outputs.PlotlyFigures, outputs.MarkSchemes]
    config.MarkSchemes.rubric_dir = str(rubric_dir)
    formgrader_view, _ = HTMLExporter(config=config).from_notebook_node(
        nb, resources={"submission_id": "x", "assignment_id": CHAPTER}
    )
    feedback_view, _ = HTMLExporter(config=config).from_notebook_node(nb, resources={"nbgrader": {}})
    for page in (formgrader_view, feedback_view):
        assert page.count("L0H0") >= 2 and page.count("Plotly.newPlot") == 2
        assert "</script><script>alert(1)" not in page  # the figure's data cannot close the script tag
    assert "Mark scheme" in formgrader_view and "hard-coded" in formgrader_view
    assert "Mark scheme" not in feedback_view and "hard-coded" not in feedback_view


# --------------------------------------------------------------------------------------------------------------
# One class, end to end
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def klass(tmp_path_factory, course):
    """Six roster students: ann (Canvas, on time, right), ben (Canvas, LATE by 26 h, right), cy (Moodle folder,
    right, 22 h after the due date with a 2-day extension, plus a PDF), dee (nothing), eve (chapter 00's notebook),
    gus (an nbgrader tree with a secret, for the exchange); and a file nobody in the roster matches."""
    tmp = tmp_path_factory.mktemp("klass")
    roster = tmp / "roster.csv"
    roster.write_text(ROSTER)
    canvas = write_zip(
        tmp / "canvas.zip",
        {
            f"adamsann_1001_555001_{CHAPTER}.ipynb": (solved(course), "2026-11-20 16:59"),
            f"brownben_LATE_1002_555002_{CHAPTER}.ipynb": (solved(course), "2026-11-21 19:00"),
            f"evansEve_1005_555005_{CHAPTER}.ipynb": (OTHER_CHAPTER.read_text(), "2026-11-21 12:00"),
            f"nobody_9999_555999_{CHAPTER}.ipynb": (solved(course), "2026-11-20 12:00"),
        },
    )
    moodle = write_zip(
        tmp / "moodle.zip",
        {
            f"Cy Chen_77003_assignsubmission_file_/{CHAPTER}.ipynb": (solved(course), "2026-11-21 15:00"),
            "Cy Chen_77003_assignsubmission_file_/notes.pdf": (b"%PDF-1.4", "2026-11-20 15:00"),
        },
    )
    tree = tmp / "collected" / "submitted" / "1006" / CHAPTER
    tree.mkdir(parents=True)
    (tree / f"{CHAPTER}.ipynb").write_text(solved(course))
    (tree / "timestamp.txt").write_text("2026-11-20 16:00:00.000000 UTC")
    (tree / "submission_secret.txt").write_text("gus-secret")
    exchange = tmp / "exchange"
    exchange.mkdir()
    out = tmp / "out"
    report = grade.grade(
        CHAPTER,
        [canvas, moodle, tmp / "collected"],
        out,
        timeout=TIMEOUT_S,
        course_dir=course,
        jobs=2,
        roster=roster,
        due=DUE,
        timezone="UTC",
        late_penalty="10%/day",
        exchange=exchange,
        course_id="mi101",
    )
    return {"report": report, "out": out, "tmp": tmp, "course": course, "exchange": exchange, "roster": roster}


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


slow = pytest.mark.slow


@slow
def test_class_ids_scores_and_reasons(klass):
    report = klass["report"]
    assert [s.student_id for s in report.students] == ["1001", "1002", "1003", "1004", "1005", "1006"]
    assert report["1001"].auto_score == 4 and report["1003"].auto_score == 4 and report["1006"].auto_score == 4
    assert report["1004"].auto_score == 0 and "no submission" in report["1004"].problems
    assert report["1005"].auto_score == 0
    assert any("is the notebook of chapter 00_history" in p for p in report["1005"].problems)
    assert any("notes.pdf is a PDF, not a notebook" in p for p in report["1003"].problems)
    problems = _rows(report.problems_csv)
    assert [r["student_id"] for r in problems] == ["1001", "1002", "1003", "1004", "1005", "1006", ""]
    assert problems[-1]["file"] == f"canvas.zip/nobody_9999_555999_{CHAPTER}.ipynb"
    assert "no student in the roster matches" in problems[-1]["problems"]
    assert problems[0]["name"] == "Ann Adams" and problems[0]["submitted"] == "2026-11-20 16:59:00 UTC"


@slow
def test_late_penalty_and_extension(klass):
    rows = {r["student_id"]: r for r in _rows(klass["report"].problems_csv)}
    assert rows["1001"]["hours_late"] == "" and rows["1001"]["late_penalty"] == ""
    assert rows["1003"]["submitted"] == "2026-11-21 15:00:00 UTC" and rows["1003"]["hours_late"] == ""  # extension
    assert rows["1002"]["hours_late"] == "26.00"  # 2026-11-21 19:00 against 2026-11-20 17:00
    assert rows["1002"]["late_penalty"] == "0.8" and rows["1002"]["score"] == "3.2"  # 10%/day, 2 days (part of one)
    ben = klass["report"]["1002"]
    late = "submitted 2026-11-21 19:00 UTC, 26.0 hours after the due date (2026-11-20 17:00 UTC): the penalty is 10%"
    assert any(p.startswith(late) for p in ben.problems)
    assert not any("after the due date" in p for p in klass["report"]["1003"].problems)  # within her extension
    assert ben.late_penalty == pytest.approx(0.8) and ben.score == pytest.approx(3.2)
    assert "3.2/6 (-0.8 late)" in klass["report"].table()
    grades = {r["student_id"]: r for r in _rows(klass["report"].grades_csv)}
    assert grades["1002"]["late_submission_penalty"] == "0.8" and grades["1002"]["email"] == "ben@uni.edu"
    assert grades["1002"]["duedate"].startswith("2026-11-20 17:00")
    assert grades["1001"]["last_name"] == "Adams" and grades["1001"]["late_submission_penalty"] == "0.0"


@slow
def test_per_question_csv_and_lms_uploads(klass):
    out = klass["out"]
    questions = _rows(out / "scores_by_question.csv")
    assert list(questions[0]) == [
        "student_id", "question", "kind", "autograded", "manual", "extra_credit", "final", "max", "pending_manual"
    ]  # fmt: skip
    ann = {r["question"]: r for r in questions if r["student_id"] == "1001"}
    assert ann["test-composition"]["final"] == "1" and ann["test-composition"]["pending_manual"] == "no"
    assert ann["answer-hidden"]["kind"] == "written" and ann["answer-hidden"]["pending_manual"] == "yes"
    assert ann["answer-hidden"]["max"] == "2"
    ben_penalty = [r for r in questions if r["student_id"] == "1002" and r["question"] == "late_penalty"]
    assert ben_penalty and ben_penalty[0]["final"] == "-0.8"

    canvas = _rows(out / "lms" / "canvas_grades.csv")
    assert list(canvas[0]) == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", CHAPTER]
    assert canvas[0]["Student"] == "Points Possible" and canvas[0][CHAPTER] == "6"
    by_id = {r["ID"]: r for r in canvas[1:]}
    assert sorted(by_id) == ["1001", "1002", "1003", "1004", "1005", "1006"]
    assert by_id["1001"]["Student"] == "Adams, Ann" and by_id["1001"]["SIS Login ID"] == "aadams"
    assert by_id["1001"][CHAPTER] == "4" and by_id["1002"][CHAPTER] == "3.2" and by_id["1004"][CHAPTER] == "0"

    moodle = {r["Email address"]: r for r in _rows(out / "lms" / "moodle_grades.csv")}
    assert moodle["cy@uni.edu"]["Identifier"] == "Participant 77003" and moodle["cy@uni.edu"]["Grade"] == "4"
    assert moodle["cy@uni.edu"]["Full name"] == "Cy Chen" and moodle["cy@uni.edu"]["ID number"] == "1003"
    assert "written answers not graded yet" in moodle["cy@uni.edu"]["Feedback comments"]

    with zipfile.ZipFile(out / "lms" / "canvas_feedback.zip") as archive:
        names = sorted(archive.namelist())
    assert f"adamsann_1001_555001_{CHAPTER}_feedback.html" in names
    assert f"ddiaz_1004_0_{CHAPTER}_feedback.html" not in names  # Canvas's name part is last+first, not the login
    assert f"diazdee_1004_0_{CHAPTER}_feedback.html" in names and len(names) == 6
    with zipfile.ZipFile(out / "lms" / "moodle_feedback.zip") as archive:
        assert archive.namelist() == [f"Cy Chen_77003_assignsubmission_file_{CHAPTER}_feedback.html"]
    with zipfile.ZipFile(out / "lms" / "feedback.zip") as archive:
        assert sorted(archive.namelist()) == [f"{sid}.html" for sid in ("1001", "1002", "1003", "1004", "1005", "1006")]


@slow
def test_feedback_shows_figures_not_mark_schemes(klass):
    out = klass["out"]
    html = (out / "feedback" / "1001" / CHAPTER / f"{CHAPTER}.html").read_text()
    assert "Plotly.newPlot" in html and "Head scores" in html and "L1H1" in html
    assert "hard-coded" not in html and "MARK SCHEME" not in html
    rubric = (out / "rubric" / f"{CHAPTER}.md").read_text()
    assert "answer-hidden (2 points)" in rubric and "hard-coded" in rubric
    config = (out / "nbgrader_config.py").read_text()
    assert "PlotlyFigures" in config and "MarkSchemes" in config and "PercentPerDay" in config


@slow
def test_feedback_release_through_the_exchange(klass):
    out, exchange = klass["out"], klass["exchange"]
    run = subprocess.run(
        [sys.executable, "-m", "nbgrader", "release_feedback", CHAPTER, "--student", "1006"],
        cwd=out,
        capture_output=True,
        text=True,
        env=dict(os.environ),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    from nbgrader.utils import notebook_hash

    released_file = exchange / "mi101" / "feedback" / f"{notebook_hash(secret='gus-secret', notebook_id=CHAPTER)}.html"
    assert released_file.is_file() and "Head scores" in released_file.read_text()


@slow
def test_regrade_keeps_manual_grading_and_problems_accumulate(klass):
    from nbgrader.api import Gradebook

    out, tmp, course = klass["out"], klass["tmp"], klass["course"]
    db = f"sqlite:///{out / grade.GRADEBOOK}"
    with Gradebook(db) as gb:  # the grader marks two written answers in the formgrader
        for sid in ("1001", "1002"):
            entry = gb.find_grade("answer-hidden", CHAPTER, CHAPTER, sid)
            entry.manual_score, entry.needs_manual_grade = 2, False
        gb.db.commit()
    # Ben hands in a new version (his answer text changed) after the batch; it is graded alone.
    late = write_zip(
        tmp / "canvas-late.zip",
        {
            f"brownben_LATE_1002_555002_{CHAPTER}-1.ipynb": (
                solved(course, **{"answer-hidden": "Hidden inputs cannot be memorised."}),
                "2026-11-21 20:00",
            )
        },
    )
    again = grade.grade(CHAPTER, [late], out, timeout=TIMEOUT_S, course_dir=course, jobs=1)
    # The saved roster matches the file; everyone graded earlier (dee's "no submission" included) is left alone.
    assert [s.student_id for s in again.students] == ["1002"]
    with Gradebook(db) as gb:
        ann = gb.find_grade("answer-hidden", CHAPTER, CHAPTER, "1001")
        ben = gb.find_grade("answer-hidden", CHAPTER, CHAPTER, "1002")
        assert ann.manual_score == 2 and not ann.needs_manual_grade
        assert ben.manual_score == 2 and ben.needs_manual_grade  # his text changed: back in the grader's queue
    assert any("answer-hidden changed since it was graded" in p for p in again["1002"].problems)
    problems = {r["student_id"] or r["file"]: r for r in _rows(again.problems_csv)}
    assert problems[f"canvas.zip/nobody_9999_555999_{CHAPTER}.ipynb"]  # the earlier run's rows are kept
    assert problems["1001"]["score"] == "6" and problems["1002"]["hours_late"] == "27.00"  # scores read afresh
    canvas = {r["ID"]: r for r in _rows(out / "lms" / "canvas_grades.csv")}
    assert canvas["1001"][CHAPTER] == "6" and canvas["1003"][CHAPTER] == "4"  # the whole class, not this run
