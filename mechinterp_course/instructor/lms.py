"""From an LMS download to one submission per student: folders, zips, Canvas and Moodle names, a roster, times.

    found = collect(["submissions.zip"], "00_history", roster=read_roster("roster.csv"), workdir=out / ".grading")

What LMSs hand an instructor, and how each is read (learnt from nbgrader's ``zip_collect`` and its file-name
collector, which leave the naming rules to the instructor; here they are built in):

- **Canvas** ("Download submissions"): a zip of flat files ``<lastfirst>_[LATE_]<user id>_<submission id>_<file>``,
  e.g. ``doejane_LATE_123456_7891011_00_history-1.ipynb``. The user id is the student's Canvas id (the same in
  every assignment); the submission id changes with every assignment, so it is never part of the student id.
  ``LATE`` is Canvas's own late mark; ``-1`` is Canvas's suffix for a re-submitted file.
- **Moodle** ("Download all submissions"): a zip of folders ``<Full Name>_<participant id>_assignsubmission_file_/``
  holding the student's files, or (older Moodles) flat files ``<Full Name>_<participant id>_assignsubmission_file_
  <file>``. The participant id is per assignment, so Moodle students are matched by name.
- **A plain folder** of ``<anything naming the student>.ipynb`` files, or of one folder per student; a browser that
  downloaded a file twice added `` (1)``, which is not part of the id.
- **An nbgrader tree** ``submitted/<student>/<chapter>/<chapter>.ipynb`` (from ``nbgrader collect``): the folder
  name is the id; ``timestamp.txt`` and ``submission_secret.txt`` travel with the notebook, so feedback can be
  released through nbgrader's exchange.

Zips (the download itself, or several) are extracted safely into the grader's own folder: no absolute paths or
``..``, bounded size. Each zip entry's time is the submission time the LMS recorded, unless a timestamps file says
otherwise.

With a **roster** (a CSV: Canvas's or Moodle's gradebook export, or ``id,name,email`` and optional ``extension``),
every file is matched to a roster student: by Canvas user id, by login (``doejane``), by e-mail, by id or by name
(words of the name in the file name); the student id is the roster's id, the same in every chapter, and roster
students with no submission are graded zero with "no submission". Without a roster the id comes from the file name.

A student with several notebooks (re-downloads, re-submissions) is graded on the newest, the others noted. A file
that is not a notebook, a notebook of another chapter, and a file no roster student matches, are each listed with
one plain reason (:attr:`Collected.unmatched` and the student's problems), never dropped without a word.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import shutil
import unicodedata
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .build import CourseError, short_name

#: Canvas: ``<lastfirst>_[LATE_]<user id>_<submission id>_<original file name>``.
CANVAS_NAME = re.compile(r"^(?P<login>[^_\s]+)_(?:(?P<late>late)_)?(?P<uid>\d+)_(?P<sub>\d+)_(?P<file>.+)$", re.I)
#: Moodle, a folder per student: ``<Full Name>_<participant id>_assignsubmission_<plugin>_``.
MOODLE_FOLDER = re.compile(r"^(?P<name>.+?)_(?P<pid>\d+)_assignsubmission_(?P<plugin>[a-z]+)_?$")
#: Moodle, flat files: ``<Full Name>_<participant id>_assignsubmission_<plugin>_<original file name>``.
MOODLE_FILE = re.compile(r"^(?P<name>.+?)_(?P<pid>\d+)_assignsubmission_(?P<plugin>[a-z]+)_(?P<file>.+)$")
#: A browser's copy marker (`` (1)``) or Canvas's re-submission suffix (``-1``), just before the extension.
COPY_MARK = re.compile(r"(?:\s*\((?P<browser>\d+)\)|-(?P<canvas>\d+))$")
#: Files an archive tool or an OS adds, never a submission.
JUNK = re.compile(r"^(?:__MACOSX|\.DS_Store|Thumbs\.db|desktop\.ini|\.ipynb_checkpoints|\._.*)$")

#: Bounds on extracting a download (a zip bomb stops with a clear error, not a full disk).
MAX_ZIP_BYTES = 4 * 1024**3
MAX_ZIP_FILES = 20_000

#: What a file that is not a notebook is, for the one-line reason.
KINDS = {
    ".pdf": "a PDF",
    ".zip": "a zip archive",
    ".py": "a Python script",
    ".html": "an HTML page",
    ".htm": "an HTML page",
    ".docx": "a Word document",
    ".txt": "a text file",
    ".png": "an image",
    ".jpg": "an image",
}

#: A notebook "is" a chapter when at least this share of the chapter's cells is in it (by nbgrader grade id or
#: by the text of its read-only cells); below it, and closer to another chapter, it is that chapter's notebook.
SAME_CHAPTER = 0.5


# --------------------------------------------------------------------------------------------------------------
# The roster
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RosterStudent:
    """One row of the roster. ``student_id`` is the id used in the gradebook (the LMS id, made file-name safe)."""

    student_id: str
    lms_id: str = ""
    name: str = ""
    first_name: str = ""
    last_name: str = ""
    email: str = ""
    login: str = ""
    sis_id: str = ""
    section: str = ""
    extension: dt.timedelta | None = None  # extra time after the due date
    due: dt.datetime | None = None  # or a personal due date (UTC)


#: Roster columns, by the names LMS exports and hand-made rosters use (compared in lower case, without spaces).
COLUMNS = {
    "student_id": ("student_id", "studentid"),
    "lms_id": ("id", "userid", "user_id", "lmsid", "lms_id", "canvasid", "idnumber"),
    "name": ("name", "student", "fullname", "studentname"),
    "first_name": ("firstname", "first_name", "givenname"),
    "last_name": ("lastname", "last_name", "surname", "familyname"),
    "email": ("email", "emailaddress", "e-mail", "mail"),
    "login": ("login", "sisloginid", "username", "loginid"),
    "sis_id": ("sisuserid", "sisid"),
    "section": ("section", "group", "groups"),
    "extension": ("extension", "extratime"),
}


def _key(text: str) -> str:
    return re.sub(r"\s+", "", text.strip().lower())


def sanitise(text: str) -> str:
    """A file-name and nbgrader safe id: letters, digits, ``-`` and single ``_``."""
    text = re.sub(r"[^A-Za-z0-9-]+", "_", text)
    return re.sub(r"[_-]*_[_-]*", "_", text).strip("_-")


def _words(text: str) -> list[str]:
    """Lower-case words without accents: how names are compared ("Zoë O'Neil" ~ "zoe_oneil")."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.findall(r"[a-z0-9]+", text.lower().replace("'", ""))


def parse_time(text: str, zone: dt.tzinfo) -> dt.datetime:
    """An ISO-like date and time (``2026-12-01 17:00``, ``2026-12-01T17:00:00+01:00``), naive ones read in
    ``zone``; returned in UTC without tzinfo (as nbgrader stores times)."""
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CourseError(f"{text!r} is not a date and time (expected e.g. 2026-12-01 17:00).") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def parse_extension(text: str, due: dt.datetime | None, zone: dt.tzinfo) -> tuple[dt.timedelta | None, str]:
    """A roster's extension: hours (``48``), ``2d``, ``36h``, ``90m``, or a personal due date. Returns the extra
    time (when it can be known) and a description."""
    text = text.strip()
    if not text:
        return None, ""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([dhm]?)", text.lower())
    if match:
        unit = {"d": "days", "h": "hours", "m": "minutes", "": "hours"}[match.group(2)]
        return dt.timedelta(**{unit: float(match.group(1))}), f"{match.group(1)} {unit}"
    personal = parse_time(text, zone)
    if due is None:
        raise CourseError(f"extension {text!r} is a date: give the assignment's due date with --due too.")
    return max(personal - due, dt.timedelta(0)), f"until {personal:%Y-%m-%d %H:%M} UTC"


def read_roster(path: str | os.PathLike, due: dt.datetime | None = None, zone: dt.tzinfo | None = None):
    """Read a roster CSV (Canvas's gradebook export, Moodle's, or a hand-made ``id,name,email[,extension]``).

    Raises :class:`CourseError` with the reason for a missing file, a file with no id, name or e-mail column, or
    two rows with the same id."""
    zone = zone or dt.UTC
    path = Path(path)
    if not path.is_file():
        raise CourseError(f"{path}: no such roster file.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        text = path.read_text(encoding="latin-1")
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise CourseError(f"{path}: the roster is empty.")
    header = [_key(h) for h in rows[0]]
    where = {}
    for field_name, aliases in COLUMNS.items():
        for alias in aliases:
            if _key(alias) in header:
                where[field_name] = header.index(_key(alias))
                break
    if not {"lms_id", "student_id", "email", "name", "first_name"} & where.keys():
        raise CourseError(
            f"{path}: no id, name or e-mail column (found: {', '.join(rows[0])}). A roster needs at least one of "
            f"'id', 'name', 'email' (Canvas's and Moodle's gradebook exports work as they are)."
        )
    students: list[RosterStudent] = []
    seen: dict[str, int] = {}
    for number, row in enumerate(rows[1:], 2):
        values = {f: row[i].strip() if i < len(row) else "" for f, i in where.items()}
        if not any(values.values()) or values.get("name", "").lower().startswith("points possible"):
            continue  # Canvas's export has a "Points Possible" row
        if not values.get("name"):
            values["name"] = " ".join(v for v in (values.get("first_name"), values.get("last_name")) if v)
        if values.get("name") and not (values.get("first_name") or values.get("last_name")):
            values["first_name"], values["last_name"] = _split_name(values["name"])
        raw_id = values.get("student_id") or values.get("lms_id") or values.get("email", "").split("@")[0]
        student_id = sanitise(raw_id or values.get("name", ""))
        if not student_id:
            raise CourseError(f"{path}, line {number}: no id, e-mail or name.")
        if student_id in seen:
            raise CourseError(f"{path}: lines {seen[student_id]} and {number} have the same id {student_id!r}.")
        seen[student_id] = number
        extension, _ = parse_extension(values.pop("extension", ""), due, zone)
        values.pop("student_id", None)
        students.append(RosterStudent(student_id=student_id, extension=extension, **values))
    if not students:
        raise CourseError(f"{path}: the roster has a header but no students.")
    return students


def _split_name(name: str) -> tuple[str, str]:
    """("Doe, Jane" or "Jane Doe") -> ("Jane", "Doe")."""
    if "," in name:
        last, first = (part.strip() for part in name.split(",", 1))
        return first, last
    parts = name.split()
    return (" ".join(parts[:-1]), parts[-1]) if len(parts) > 1 else (name, "")


# --------------------------------------------------------------------------------------------------------------
# Files found in a download
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Found:
    """One file of a download, with what its name and place say about who handed it in."""

    path: Path
    shown: str  # how it is named in messages (the path inside the download)
    layout: str  # "canvas", "moodle", "folder", "file" or "tree"
    hint: str  # the part of the name that says who: a Canvas login, a Moodle full name, a folder or file stem
    original: str  # the file name the student gave it
    canvas_uid: str = ""
    canvas_submission: str = ""
    moodle_participant: str = ""
    late_mark: bool = False
    copy: int = 0  # (1), (2), -1 ...: a re-download or a re-submission
    timestamp: dt.datetime | None = None  # UTC
    extra: dict[str, Path] = field(default_factory=dict)  # an nbgrader tree's timestamp.txt, submission_secret.txt


@dataclass
class Submission:
    """What is graded for one student: ``path`` is None when there is nothing to grade (no notebook handed in,
    only files that are not notebooks, or another chapter's notebook); ``problems`` say why."""

    student_id: str
    path: Path | None
    origin: Path | str
    problems: list[str] = field(default_factory=list)
    student: RosterStudent | None = None
    timestamp: dt.datetime | None = None  # UTC
    late_mark: bool = False
    canvas: tuple[str, str, str] | None = None  # (login, user id, submission id) from a Canvas download
    moodle: tuple[str, str] | None = None  # (full name, participant id) from a Moodle download
    extra: dict[str, Path] = field(default_factory=dict)


@dataclass
class Collected:
    submissions: list[Submission]
    unmatched: list[tuple[str, str]]  # (file, reason): files no student could be given


def _strip_copy(stem: str) -> tuple[str, int]:
    match = COPY_MARK.search(stem)
    if not match:
        return stem, 0
    return stem[: match.start()], int(match.group("browser") or match.group("canvas"))


def _describe(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return KINDS.get(suffix, f"a {suffix[1:]} file" if suffix else "a file with no extension")


def extract(archive: Path, into: Path) -> dict[Path, dt.datetime]:
    """Extract a zip safely; returns each extracted file's time as recorded in the zip (naive)."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise CourseError(f"{archive}: not a zip file (or a damaged one).") from None
    times: dict[Path, dt.datetime] = {}
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > MAX_ZIP_FILES or sum(i.file_size for i in infos) > MAX_ZIP_BYTES:
            raise CourseError(f"{archive}: too large to extract ({len(infos)} files).")
        for info in infos:
            parts = Path(info.filename.replace("\\", "/")).parts
            if info.filename.startswith(("/", "\\")) or ".." in parts or not parts or ":" in parts[0]:
                raise CourseError(f"{archive}: refuses to extract {info.filename!r} (a path outside the archive).")
            target = into.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as source, open(target, "wb") as sink:
                while chunk := source.read(1 << 20):
                    sink.write(chunk)
            times[target] = dt.datetime(*info.date_time)
    return times


def _walk(folder: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not JUNK.match(d) and not d.startswith("."))
        files += [Path(dirpath) / f for f in sorted(filenames) if not JUNK.match(f) and not f.startswith(".")]
    return files


def _classify(file: Path, root: Path, shown_root: str) -> Found:
    """What a file's name and folder say (no roster yet)."""
    rel = file.relative_to(root)
    shown = f"{shown_root}/{rel.as_posix()}" if shown_root else rel.as_posix()
    for parent in rel.parents:
        if parent != Path(".") and (m := MOODLE_FOLDER.match(parent.name)):
            return Found(file, shown, "moodle", m["name"], file.name, moodle_participant=m["pid"])
    if m := MOODLE_FILE.match(file.name):
        return Found(file, shown, "moodle", m["name"], m["file"], moodle_participant=m["pid"])
    if m := CANVAS_NAME.match(file.name):
        return Found(
            file,
            shown,
            "canvas",
            m["login"],
            m["file"],
            canvas_uid=m["uid"],
            canvas_submission=m["sub"],
            late_mark=bool(m["late"]),
        )
    if len(rel.parts) > 1:  # one folder per student
        return Found(file, shown, "folder", rel.parts[0], file.name)
    return Found(file, shown, "file", file.name.rsplit(".", 1)[0], file.name)


def _tree_student(student_dir: Path, chapter: str, shown_root: str) -> list[Found]:
    """One ``<student>/<chapter>/`` folder of an nbgrader tree: its files, or the folder itself when it is empty."""
    folder = student_dir / chapter
    shown = f"{shown_root}/{student_dir.name}/{chapter}".lstrip("/")
    extra = {name: folder / name for name in ("timestamp.txt", "submission_secret.txt") if (folder / name).is_file()}
    found = [
        Found(file, f"{shown}/{file.relative_to(folder).as_posix()}", "tree", student_dir.name, file.name, extra=extra)
        for file in _walk(folder)
        if file.name not in extra
    ]
    return found or [Found(folder, shown, "tree", student_dir.name, "")]


def scan(paths, chapter: str, workdir: Path, zone: dt.tzinfo) -> list[Found]:
    """Every file under ``paths`` (zips extracted into ``workdir``), classified by layout. Raises
    :class:`CourseError` for a path that does not exist or a folder with no files at all."""
    if not paths:
        raise CourseError("No submissions given: pass notebooks, folders or zips of them.")
    found: list[Found] = []
    for number, raw in enumerate(paths):
        path = Path(raw)
        if not path.exists():
            raise CourseError(f"{raw}: no such file or folder.")
        times: dict[Path, dt.datetime] = {}
        if path.is_file() and path.suffix.lower() == ".zip":
            root = workdir / f"{number}-{sanitise(path.stem) or 'download'}"
            if root.exists():
                shutil.rmtree(root)
            times = extract(path, root)
            shown = path.name
        elif path.is_file():
            found.append(_classify(path, path.parent, ""))
            continue
        else:
            root, shown = path, path.name
        # A zip of a folder, or a download extracted into one: look inside the wrapper (not a student's folder).
        while not (root / chapter).is_dir():  # (a student's folder of an nbgrader tree is not a wrapper)
            entries = [e for e in root.iterdir() if not JUNK.match(e.name) and not e.name.startswith(".")]
            wrapper = entries[0] if len(entries) == 1 and entries[0].is_dir() else None
            if wrapper is None or MOODLE_FOLDER.match(wrapper.name) or (wrapper / chapter).is_dir():
                break
            if wrapper.name == "submitted" or any((d / chapter).is_dir() for d in wrapper.iterdir() if d.is_dir()):
                break
            root, shown = wrapper, f"{shown}/{wrapper.name}"
        if (root / chapter).is_dir() and not (root / "submitted").is_dir():  # one student's folder of a tree
            found += _tree_student(root, chapter, root.parent.name)
            continue
        tree_root = root / "submitted" if (root / "submitted").is_dir() else root
        students = sorted(d for d in tree_root.iterdir() if d.is_dir() and (d / chapter).is_dir())
        if students:
            for student_dir in students:
                found += _tree_student(student_dir, chapter, shown)
            continue
        files = _walk(root)
        if not files:
            raise CourseError(
                f"{raw}: no notebooks found. Expected one <student>.ipynb per student, a folder per student, an "
                f"LMS download (Canvas, Moodle; the zip or its extracted folder), or an nbgrader tree "
                f"submitted/<student>/{chapter}/{chapter}.ipynb."
            )
        for file in files:
            item = _classify(file, root, shown)
            if file in times:
                item.timestamp = times[file].replace(tzinfo=zone).astimezone(dt.UTC).replace(tzinfo=None)
            found.append(item)
    for item in found:
        item.copy = _strip_copy(Path(item.original).stem)[1] if item.original else 0
        if item.layout == "file":
            item.hint, item.copy = _strip_copy(item.hint)
    return found


# --------------------------------------------------------------------------------------------------------------
# Which chapter a notebook is
# --------------------------------------------------------------------------------------------------------------


def _signature(nb: dict) -> tuple[set[str], set[str]]:
    """A notebook's nbgrader grade ids and the text of its longer markdown cells."""
    ids, texts = set(), set()
    for cell in nb.get("cells", []):
        if not isinstance(cell, dict):
            continue
        grade_id = ((cell.get("metadata") or {}).get("nbgrader") or {}).get("grade_id")
        if isinstance(grade_id, str):
            ids.add(grade_id)
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        if cell.get("cell_type") == "markdown" and len(source.strip()) > 40:
            texts.add(source.strip())
    return ids, texts


def similarity(nb: dict, release: dict) -> float:
    """The share of ``release``'s graded cells (by grade id) or of its longer text cells found in ``nb``."""
    ids, texts = _signature(nb)
    rel_ids, rel_texts = _signature(release)
    by_id = len(ids & rel_ids) / len(rel_ids) if rel_ids else 0.0
    by_text = len(texts & rel_texts) / len(rel_texts) if rel_texts else 0.0
    return max(by_id, by_text)


def which_chapter(path: Path, chapter: str, releases: dict[str, dict]) -> str | None:
    """The other chapter whose notebook ``path`` is, or None when it is this chapter's (or unreadable, or nobody's:
    those are graded and explained as usual)."""
    try:
        nb = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, OSError):
        return None
    if not isinstance(nb, dict):
        return None
    scores = {name: similarity(nb, release) for name, release in releases.items()}
    own = scores.pop(chapter, 0.0)
    if own >= SAME_CHAPTER or not scores:
        return None
    best = max(scores, key=scores.get)
    return best if scores[best] > own and scores[best] >= SAME_CHAPTER else None


# --------------------------------------------------------------------------------------------------------------
# Who handed it in
# --------------------------------------------------------------------------------------------------------------


def student_id_from_filename(filename: str | os.PathLike, chapter: str) -> str:
    """The student id of a loose notebook with no roster: the stem without a copy marker (`` (1)``) and without the
    chapter's name (``01_circuits`` or ``circuits``, as a whole word), made safe (:func:`sanitise`); the whole
    stem if nothing is left.

    >>> student_id_from_filename("smith_john_12345_67890_01_circuits.ipynb", "01_circuits")
    'smith_john_12345_67890'
    """
    stem, _ = _strip_copy(Path(filename).name.rsplit(".", 1)[0] if "." in Path(filename).name else Path(filename).name)
    stripped = stem
    for name in (chapter, short_name(chapter)):
        stripped = re.sub(rf"(?<![A-Za-z0-9]){re.escape(name)}(?![A-Za-z0-9])", "", stripped, flags=re.IGNORECASE)
    return sanitise(stripped) or sanitise(stem) or "student"


def _id_without_roster(item: Found, chapter: str) -> str:
    if item.layout == "canvas":
        return sanitise(f"{item.hint}_{item.canvas_uid}")
    if item.layout in ("moodle", "tree", "folder"):
        return sanitise(item.hint) or "student"
    return student_id_from_filename(item.hint, chapter)


def match_student(item: Found, roster: list[RosterStudent], chapter: str) -> tuple[RosterStudent | None, str]:
    """The roster student a file belongs to, or None and the reason."""
    if item.canvas_uid:
        by_uid = [s for s in roster if item.canvas_uid in (s.lms_id, s.student_id)]
        if len(by_uid) == 1:
            return by_uid[0], ""
    hint = item.hint
    hint_words = _words(hint)
    joined = "".join(hint_words)
    candidates = []
    for student in roster:
        keys = {k.lower() for k in (student.student_id, student.lms_id, student.login, student.sis_id) if k}
        email = student.email.lower()
        name_words = _words(student.name or f"{student.first_name} {student.last_name}")
        if (
            (keys & set(hint_words))
            or hint.lower() in keys
            or (email and (email in hint.lower() or email.split("@")[0] == hint.lower()))
            or (name_words and all(w in hint_words for w in name_words))
            or (item.layout == "canvas" and name_words and joined == "".join(name_words[-1:] + name_words[:-1]))
        ):
            candidates.append(student)
    if len(candidates) == 1:
        return candidates[0], ""
    if not candidates:
        return None, f"no student in the roster matches {item.shown!r}"
    names = ", ".join(s.student_id for s in candidates)
    return None, f"{item.shown!r} matches several students in the roster ({names}): rename it"


def collect(
    paths,
    chapter: str,
    workdir: Path,
    releases: dict[str, dict] | None = None,
    roster: list[RosterStudent] | None = None,
    timestamps: dict[str, dt.datetime] | None = None,
    zone: dt.tzinfo = dt.UTC,
) -> Collected:
    """One :class:`Submission` per student (module docstring). ``releases`` maps chapter names to their released
    notebooks (to recognise another chapter's notebook); ``timestamps`` maps a student id or a file name to a
    submission time (UTC), overriding the download's."""
    releases = releases or {}
    found = scan(paths, chapter, workdir, zone)
    unmatched: list[tuple[str, str]] = []
    by_student: dict[str, list[Found]] = {}
    who: dict[str, RosterStudent | None] = {}
    for item in found:
        if roster is not None:
            student, reason = match_student(item, roster, chapter)
            if student is None:
                unmatched.append((item.shown, reason + "; not graded"))
                continue
            sid = student.student_id
            who[sid] = student
        else:
            sid = _id_without_roster(item, chapter)
            who.setdefault(sid, None)
        by_student.setdefault(sid, []).append(item)
    for student in roster or []:
        who.setdefault(student.student_id, student)

    submissions = []
    for sid in sorted(who):
        items = by_student.get(sid, [])
        sub = Submission(sid, None, items[0].shown if items else "(roster)", student=who[sid])
        for item in items:
            if item.canvas_uid:
                sub.canvas = (item.hint, item.canvas_uid, item.canvas_submission)
            if item.moodle_participant:
                sub.moodle = (item.hint, item.moodle_participant)
        if not items:
            sub.problems.append("no submission")
            submissions.append(sub)
            continue
        notebooks, others = [], []
        for item in items:
            if item.path.is_dir():
                others.append(f"no notebook in {item.shown}")
            elif item.path.suffix.lower() != ".ipynb":
                others.append(f"{item.shown} is {_describe(item.path.name)}, not a notebook: not graded")
            elif (other := which_chapter(item.path, chapter, releases)) is not None:
                others.append(f"{item.shown} is the notebook of chapter {other}, not {chapter}: not graded")
            else:
                notebooks.append(item)
        if len(notebooks) > 1 and notebooks[0].layout == "tree":
            named = [n for n in notebooks if n.original == f"{chapter}.ipynb"]
            if not named:
                sub.problems.append(
                    f"no {chapter}.ipynb but {len(notebooks)} other notebooks "
                    f"({', '.join(n.original for n in notebooks)}): could not tell which to grade"
                )
                submissions.append(sub)
                continue
            notebooks = named
        for item in notebooks:
            if timestamps:
                item.timestamp = timestamps.get(sid) or timestamps.get(item.path.name) or item.timestamp
        notebooks.sort(key=lambda n: (n.timestamp or dt.datetime.min, n.copy, n.path.stat().st_mtime))
        sub.problems += others
        if notebooks:
            chosen = notebooks[-1]
            sub.path, sub.origin = chosen.path, chosen.shown
            sub.timestamp, sub.late_mark, sub.extra = chosen.timestamp, chosen.late_mark, dict(chosen.extra)
            if chosen.layout == "tree" and "timestamp.txt" in chosen.extra and sub.timestamp is None:
                sub.timestamp = _read_timestamp(chosen.extra["timestamp.txt"])
            if chosen.late_mark:
                sub.problems.append(
                    "Canvas marked this submission LATE"
                    + ("" if sub.timestamp else " (the download gives no time: pass --timestamps to apply a penalty)")
                )
            if chosen.layout == "tree" and chosen.original != f"{chapter}.ipynb":
                sub.problems.append(
                    f"the notebook was named {chosen.original} instead of {chapter}.ipynb; graded it anyway"
                )
            older = [n.shown for n in notebooks[:-1]]
            if older:
                sub.problems.append(
                    f"graded the newest of {len(notebooks)} notebooks ({chosen.shown}); ignored: " + ", ".join(older)
                )
        submissions.append(sub)
    _refuse_clashes(submissions, roster)
    return Collected(submissions, unmatched)


def _read_timestamp(path: Path) -> dt.datetime | None:
    from nbgrader.utils import parse_utc

    try:
        return parse_utc(path.read_text().strip()).replace(tzinfo=None)
    except (ValueError, OSError):
        return None


def _refuse_clashes(submissions: list[Submission], roster) -> None:
    """Without a roster, two different files may map to one id only if they differ by a copy marker; anything
    else is ambiguous enough to stop (with a roster, the roster decides)."""
    if roster is not None:
        return
    for sub in submissions:
        for problem in sub.problems:
            if problem.startswith("graded the newest of"):
                files = [sub.origin, *problem.split("ignored: ", 1)[1].split(", ")]
                stems = {_strip_copy(Path(f).name.rsplit(".", 1)[0])[0] for f in files}
                if len(stems) > 1:
                    raise CourseError(
                        f"Two submissions map to the same student id ({sub.student_id}: {', '.join(files)}). "
                        f"Rename one of the files, or pass a roster (--roster) to match files to students."
                    )


def read_timestamps(path: str | os.PathLike, zone: dt.tzinfo) -> dict[str, dt.datetime]:
    """A CSV of submission times: a ``student`` (id) or ``file`` (name) column and a ``timestamp`` column."""
    path = Path(path)
    if not path.is_file():
        raise CourseError(f"{path}: no such timestamps file.")
    rows = list(csv.DictReader(path.read_text(encoding="utf-8-sig").splitlines()))
    result = {}
    for number, row in enumerate(rows, 2):
        row = {_key(k): (v or "").strip() for k, v in row.items() if k}
        who = row.get("student") or row.get("student_id") or row.get("file")
        if not who or not row.get("timestamp"):
            raise CourseError(f"{path}, line {number}: needs a student (or file) and a timestamp.")
        result[who] = parse_time(row["timestamp"], zone)
    return result


def timezone(name: str | None) -> dt.tzinfo:
    """``--timezone``: an IANA name (``Europe/London``); default the machine's local zone."""
    if not name:
        return dt.datetime.now().astimezone().tzinfo or dt.UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CourseError(f"Unknown time zone {name!r} (expected a name such as Europe/London or UTC).") from None


# --------------------------------------------------------------------------------------------------------------
# Late penalties (nbgrader's late-submission plugin)
# --------------------------------------------------------------------------------------------------------------

#: ``--late-penalty``: ``none`` (lateness recorded, no penalty; nbgrader's default), ``zero``, or ``N%/day``.
PENALTY = re.compile(r"^(\d+(?:\.\d+)?)\s*%\s*/\s*day$")


def check_penalty(text: str) -> str:
    text = (text or "none").strip().lower()
    if text in ("none", "zero") or PENALTY.match(text):
        return text
    raise CourseError(f"--late-penalty {text!r}: expected none, zero, or a percentage per day such as 10%/day.")


def lateness_notes(sub: Submission, due: dt.datetime | None, penalty: str) -> list[str]:
    """What a late student reads at the top of their feedback: when they handed in, how late, and the rule."""
    if sub.timestamp is None or due is None:
        return []
    extension = sub.student.extension if sub.student and sub.student.extension else dt.timedelta(0)
    late = sub.timestamp - (due + extension)
    if late <= dt.timedelta(0):
        return []
    rule = {
        "none": "no penalty is applied",
        "zero": "a late submission scores zero",
    }.get(penalty, f"the penalty is {percent_per_day(penalty):g}% of the score per day or part of a day")
    with_extension = f" plus your extension of {extension}" if extension else ""
    return [
        f"submitted {sub.timestamp:%Y-%m-%d %H:%M} UTC, {late.total_seconds() / 3600:.1f} hours after the due date "
        f"({due:%Y-%m-%d %H:%M} UTC{with_extension}): {rule}"
    ]


def percent_per_day(text: str) -> float:
    return float(PENALTY.match(check_penalty(text)).group(1))


def _percent_plugin():
    import math

    from nbgrader.plugins import LateSubmissionPlugin
    from traitlets import Float

    class PercentPerDay(LateSubmissionPlugin):
        """``percent`` of the score obtained per day late or part of one, never more than the score.

        nbgrader applies the penalty when it autogrades, to the notebook's score at that moment: run ``grade``
        again after the written answers are graded so that the penalty covers them too.
        """

        percent = Float(10.0, help="percentage of the score taken per day (or part of a day) late").tag(config=True)

        def late_submission_penalty(self, student_id, score, total_seconds_late):
            days = math.ceil(total_seconds_late / 86400)
            return min(score, score * self.percent / 100 * days)

    return PercentPerDay


def __getattr__(name: str):
    """``PercentPerDay`` is built on first use (nbgrader finds it by its dotted name), keeping this module light."""
    if name == "PercentPerDay":
        cls = _percent_plugin()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_paths(paths, chapter: str) -> None:
    """Fail early, before anything is written, on what cannot be a batch: no paths, a path that does not exist, an
    empty folder, a zip that is not one."""
    if not paths:
        raise CourseError("No submissions given: pass notebooks, folders or zips of them.")
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise CourseError(f"{raw}: no such file or folder.")
        if path.is_file() and path.suffix.lower() == ".zip" and not zipfile.is_zipfile(path):
            raise CourseError(f"{raw}: not a zip file (or a damaged one).")
        if path.is_dir() and not _walk(path) and not any(path.iterdir()):
            raise CourseError(
                f"{raw}: no notebooks found. Expected one <student>.ipynb per student, a folder per student, an "
                f"LMS download (Canvas, Moodle; the zip or its extracted folder), or an nbgrader tree "
                f"submitted/<student>/{chapter}/{chapter}.ipynb."
            )
