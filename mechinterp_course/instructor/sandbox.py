"""The box a graded notebook's kernel runs in: its own processes, no network, a filesystem that hides the answers,
another user, and resource limits. Linux only; nothing to install.

The grader starts every kernel (and every tokens-only function, :mod:`.judge`) through this module's launcher::

    python -m mechinterp_course.instructor.sandbox SPEC.json -- python -m ipykernel_launcher -f CONNECTION.json

The launcher reads the :class:`Spec`, builds the box, and runs the command inside it:

1. **Namespaces** (``unshare``): a new mount, network and PID namespace. As root that is all; as another user it
   first tries a user namespace (where the kernel allows them). In the new network namespace there is no interface
   but a loopback that is down: no connection goes anywhere (the kernel talks to the grader over Unix sockets).
   In the new PID namespace the launcher's child is process 1: when it ends, every process the student's code
   started ends with it, double-forked or not, and the grader's processes are not visible at all.
2. **A filesystem that hides the answers.** Every folder in :attr:`Spec.cover` is covered by an empty in-memory
   filesystem; the paths in :attr:`Spec.keep` below them are put back (the course's library and virtual
   environment, the interpreter). The grader covers every top-level folder but the operating system's
   (:data:`SYSTEM_FOLDERS`), so nothing of the machine's users is in sight (another copy of the course in a home
   folder neither), and names the course folder, the grading folder and the submissions' folders too. So the course
   folder shows only its library: no ``solutions/``, no ``.git``, no tests; the grading folder (gradebook, other
   students' notebooks) and the folders submissions were read from are empty. In the library, each chapter's
   generated ``reference.py`` and its ``checks.py`` are replaced by stubs and every ``__pycache__`` is hidden
   (:attr:`Spec.stubs`), so no answer can be imported or read. ``/tmp``, ``/var/tmp`` and ``/dev/shm`` are small
   private in-memory folders, and the kernel's working folder is a fresh copy of the released chapter folder there.
3. **Another user.** Run as root, the command runs as an unprivileged user id of its own (one per grading slot,
   :attr:`Spec.uid`): it cannot write the installed library, signal the grader, or read other slots' files.
4. **Limits** (``setrlimit``): address space, number of processes, file size, CPU time, open files; no core files;
   ``no_new_privs``.

Whatever cannot be had (no root and no user namespaces, say) is left out; :func:`report` says what is in force and
:func:`missing` what is not, and the grader prints that once per batch. Grading works either way.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Linux constants (sched.h, mount.h, prctl.h).
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 8, 32, 4096, 16384, 1 << 18
MS_RDONLY = 1
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38

MIB = 1024 * 1024


@dataclass
class Limits:
    """Resource limits for student code (``setrlimit``); the README states the defaults, ``grade`` has flags."""

    memory_mb: int = 6144  # address space: a memory bomb gets a MemoryError, not the machine
    processes: int = 256  # processes and threads of the slot's user: a fork bomb stops here
    file_mb: int = 256  # largest file the code may write
    cpu_seconds: int = 3600  # CPU time of one kernel (the per-cell wall-clock limit is the grader's)
    open_files: int = 1024
    tmp_mb: int = 512  # the private /tmp, /var/tmp and /dev/shm (each)


@dataclass
class Spec:
    """What the launcher builds (written to JSON by the grader)."""

    work_dir: str  # the command's working folder, created fresh in the private /tmp
    ipc_dir: str  # where the kernel's Unix sockets and the grader's messages live (kept visible)
    files: dict[str, str] = field(default_factory=dict)  # name -> path: files copied into work_dir
    cover: list[str] = field(default_factory=list)  # folders (or files) to hide
    keep: list[str] = field(default_factory=list)  # paths under a covered folder to put back
    stubs: dict[str, str] = field(default_factory=dict)  # target file -> stub file bound over it
    blank: list[str] = field(default_factory=list)  # folders to hide inside kept paths (__pycache__)
    uid: int | None = None  # run as this user (root only)
    chown: list[str] = field(default_factory=list)  # paths to give to that user first (the connection file)
    env: dict[str, str] = field(default_factory=dict)  # the command's whole environment
    limits: Limits = field(default_factory=Limits)
    status_file: str | None = None  # where the launcher writes what it achieved (JSON)

    def write(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def read(cls, path: str | os.PathLike) -> Spec:
        data = json.loads(Path(path).read_text())
        data["limits"] = Limits(**data.get("limits", {}))
        return cls(**data)


# --------------------------------------------------------------------------------------------------------------
# System calls
# --------------------------------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def _unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    encode = lambda text: None if text is None else text.encode()  # noqa: E731
    _check(_libc.mount(encode(source), encode(target), encode(fstype), flags, encode(data)), f"mount {target}")


def mount_small_tmpfs(target: str, size_mb: int) -> None:
    """Mount an in-memory folder of ``size_mb`` on ``target`` (root only; used by the grader for sockets)."""
    _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size_mb}m,mode=0700")


def unmount(target: str) -> None:
    MNT_DETACH = 2
    _check(_libc.umount2(target.encode(), MNT_DETACH), f"umount {target}")


def _prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, value, 0, 0, 0), "prctl")


# --------------------------------------------------------------------------------------------------------------
# Building the box (run by the launcher, as root or in a user namespace)
# --------------------------------------------------------------------------------------------------------------


def _enter_namespaces(status: dict) -> None:
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID
    if os.geteuid() == 0:
        _unshare(flags)
        status["namespaces"] = "root"
        return
    uid, gid = os.getuid(), os.getgid()
    _unshare(CLONE_NEWUSER | flags)
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"0 {uid} 1")
    Path("/proc/self/gid_map").write_text(f"0 {gid} 1")
    status["namespaces"] = "user"


def _tmpfs(target: str, size_mb: int, mode: str = "0755") -> None:
    _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size_mb}m,mode={mode}")


def _make_path(path: str, is_dir: bool) -> None:
    if is_dir:
        os.makedirs(path, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Path(path).touch()


def _bind_fd(fd: int, target: str, is_dir: bool) -> None:
    _make_path(target, is_dir)
    _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)


def _build_filesystem(spec: Spec, status: dict) -> None:
    """Covers, keeps, stubs and the private temporary folders (module docstring, point 2)."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    release = {name: Path(path).read_bytes() for name, path in spec.files.items()}  # read before anything is hidden
    temporary = ["/tmp", "/var/tmp", "/dev/shm"]
    covers = sorted({os.path.realpath(p) for p in spec.cover if os.path.lexists(p)} | set(temporary), key=len)
    keep = [os.path.realpath(p) for p in [*spec.keep, spec.ipc_dir] if os.path.exists(p)]
    # Open every kept path first: after a cover, its old path no longer leads to it.
    handles = {path: (os.open(path, os.O_PATH), os.path.isdir(path)) for path in keep}
    stubs = {os.path.realpath(t): os.open(s, os.O_PATH) for t, s in spec.stubs.items() if os.path.exists(t)}
    covered: list[str] = []
    for cover in covers:
        inside_covered = any(cover.startswith(c.rstrip("/") + "/") for c in covered)
        inside_kept = any(cover == k or cover.startswith(k.rstrip("/") + "/") for k in keep)
        if inside_covered and not inside_kept:
            continue  # already hidden
        if cover in keep:
            continue
        if os.path.isdir(cover):
            _tmpfs(cover, spec.limits.tmp_mb if cover in temporary else 1, "1777" if cover in temporary else "0755")
        else:
            _mount("/dev/null", cover, None, MS_BIND)
        covered.append(cover)
        for path, (fd, is_dir) in handles.items():
            if path.startswith(cover.rstrip("/") + "/"):
                _bind_fd(fd, path, is_dir)
    for target, fd in stubs.items():
        _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND)
    for folder in spec.blank:
        if os.path.isdir(folder):
            _tmpfs(folder, 1)
    for fd, _ in handles.values():
        os.close(fd)
    for fd in stubs.values():
        os.close(fd)
    os.makedirs(spec.work_dir, exist_ok=True)
    for name, data in release.items():
        (Path(spec.work_dir) / name).write_bytes(data)
    status["hidden"] = covered
    status["stubs"] = sorted(stubs)


def _limit(spec: Limits) -> None:
    for which, value in [
        (resource.RLIMIT_AS, spec.memory_mb * MIB),
        (resource.RLIMIT_NPROC, spec.processes),
        (resource.RLIMIT_FSIZE, spec.file_mb * MIB),
        (resource.RLIMIT_CPU, spec.cpu_seconds),
        (resource.RLIMIT_NOFILE, spec.open_files),
        (resource.RLIMIT_CORE, 0),
    ]:
        resource.setrlimit(which, (value, value))


def _become(uid: int, paths: list[str]) -> None:
    for path in paths:
        if os.path.lexists(path):
            os.chown(path, uid, uid, follow_symlinks=False)
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def launch(spec: Spec, command: list[str]) -> int:
    """Build the box and run ``command`` in it; returns its exit status (the launcher's own)."""
    status: dict = {"uid": None, "limits": asdict(spec.limits), "errors": []}
    try:
        _enter_namespaces(status)
    except OSError as error:
        status["namespaces"] = None
        status["errors"].append(f"namespaces: {error}")
    if status["namespaces"]:
        try:
            _build_filesystem(spec, status)
        except OSError as error:
            status["errors"].append(f"filesystem: {error}")
    os.makedirs(spec.work_dir, exist_ok=True)
    as_root = os.geteuid() == 0 and status.get("namespaces") == "root"
    uid = spec.uid if as_root else None
    status["uid"] = uid
    if uid is not None:
        os.chown(spec.work_dir, uid, uid)
        for path in Path(spec.work_dir).rglob("*"):
            os.chown(path, uid, uid)
    if spec.status_file:
        Path(spec.status_file).write_text(json.dumps(status))

    # An interrupt reaches the kernel directly (the grader signals the whole process group); the launcher and
    # process 1 ignore it, so that it arrives once.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    child = os.fork()
    if child == 0:  # process 1 of the new PID namespace (when there is one)
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if status.get("namespaces"):
            try:
                _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            except OSError:
                pass
        os._exit(_init(spec, command, uid))
    while True:
        try:
            _, code = os.waitpid(child, 0)
            return os.waitstatus_to_exitcode(code) & 0xFF
        except ChildProcessError:
            return 1
        except InterruptedError:
            continue


def _init(spec: Spec, command: list[str], uid: int | None) -> int:
    """Process 1: start the command, pass on interrupts, reap orphans, and end when the command ends."""
    kernel = os.fork()
    if kernel == 0:
        try:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.chdir(spec.work_dir)
            _limit(spec.limits)
            if uid is not None:
                _become(uid, spec.chown)
            _prctl(PR_SET_NO_NEW_PRIVS, 1)
            os.execve(command[0], command, spec.env)
        except BaseException as error:  # noqa: BLE001 - nothing to return to: report and leave
            print(f"sandbox: could not start {command[0]}: {error}", file=sys.stderr)
        os._exit(127)
    while True:
        try:
            pid, code = os.wait()
        except ChildProcessError:
            return 1
        except InterruptedError:
            continue
        if pid == kernel:
            return os.waitstatus_to_exitcode(code) & 0xFF


# --------------------------------------------------------------------------------------------------------------
# Planning a box (the grader's side)
# --------------------------------------------------------------------------------------------------------------

#: Student code runs as this user id plus the grading slot's number (when the grader runs as root), skipping ids
#: that belong to an account of the machine.
UID_BASE = 64000

REFERENCE_STUB = '''"""Hidden while a notebook is graded: the grader keeps the course's reference answers from
student code."""

EXERCISES: dict = {}
ANSWER_KEYS: dict = {}


def __getattr__(name):
    if name.startswith("__"):  # introspection (inspect, pickle, IPython) asks for dunder names: answer as usual
        raise AttributeError(name)
    # ImportError, not AttributeError: `from ... import name` would replace an AttributeError's message with its own.
    raise ImportError(f"the reference answer {name!r} is not available while your notebook is graded")
'''

CHECKS_STUB = '''"""Hidden while a notebook is graded: the grader runs the checks in its own process, not in the
notebook."""


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)

    def unavailable(*args, **kwargs):
        raise RuntimeError("checks run in the grader, not in the notebook, while it is graded")

    return unavailable
'''

#: The files of a chapter's package that student code must not read while it is graded.
HIDDEN_MODULES = {"reference.py": REFERENCE_STUB, "checks.py": CHECKS_STUB}


@dataclass
class Plan:
    """What every box of one grading batch hides and keeps (built once per batch by the grader)."""

    course_root: str
    package_dir: str
    hide: list[str]  # the grading folder, the folders and files submissions were read from
    stub_dir: str  # where the stubs are written
    limits: Limits = field(default_factory=Limits)

    def stubs(self) -> dict[str, str]:
        """target -> stub for every hidden module of every chapter package (writes the stubs once)."""
        stubs = {}
        Path(self.stub_dir).mkdir(parents=True, exist_ok=True)
        for name, text in HIDDEN_MODULES.items():
            stub = Path(self.stub_dir) / name
            if not stub.is_file() or stub.read_text() != text:
                stub.write_text(text)
                stub.chmod(0o644)
            for target in Path(self.package_dir).glob(f"*/{name}"):
                stubs[str(target)] = str(stub)
        return stubs

    def needed(self) -> list[str]:
        """What every box must see: the interpreter, its virtual environment and the course's library."""
        paths = {sys.prefix, sys.base_prefix, self.package_dir, os.path.dirname(os.path.realpath(sys.executable))}
        return sorted(os.path.realpath(p) for p in paths)

    def spec(
        self,
        *,
        work_dir: str,
        ipc_dir: str,
        uid: int | None,
        env: dict[str, str],
        files: dict[str, str] | None = None,
        chown: list[str] | None = None,
        status_file: str | None = None,
        isolate: bool = False,
    ) -> Spec:
        """The box of one kernel (or, with ``isolate``, of a function that may see its arguments only: the whole
        library is hidden, not just its answers)."""
        # Everything but the system is hidden (another copy of the course elsewhere on the machine included); what
        # the box needs is put back. The course folder, the grading folder and the submissions are named too, in
        # case they sit inside a system folder.
        cover = [*outside_the_system(), self.course_root, *self.hide]
        checkout = Path(self.package_dir).parent  # an editable install: the package's own checkout (solutions/, .git)
        if (checkout / "pyproject.toml").is_file():
            cover.append(str(checkout))
        keep = [p for p in self.needed() if not (isolate and p == os.path.realpath(self.package_dir))]
        if isolate:
            cover.append(self.package_dir)
        if uid is not None:  # an unprivileged user must be able to walk down to what it needs
            for path in keep:
                for ancestor in list(Path(path).parents)[:-1]:
                    if not os.stat(ancestor).st_mode & 0o001:
                        cover.append(str(ancestor))
        blank = [] if isolate else [str(p) for p in Path(self.package_dir).rglob("__pycache__")]
        return Spec(
            work_dir=work_dir,
            ipc_dir=ipc_dir,
            files=files or {},
            cover=cover,
            keep=keep,
            stubs={} if isolate else self.stubs(),
            blank=blank,
            uid=uid,
            chown=chown or [],
            env=env,
            limits=self.limits,
            status_file=status_file,
        )


#: Top-level folders the box keeps: the operating system (programs, libraries, configuration, devices). Every other
#: top-level folder (/home, /root, /work, /srv, /opt, /var, /run, /mnt, ...) is hidden unless it holds something the
#: box needs (the interpreter, the course's library), which is put back alone.
SYSTEM_FOLDERS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "dev", "proc", "sys", "tmp")


def outside_the_system() -> list[str]:
    """The top-level folders of ``/`` a box hides (:data:`SYSTEM_FOLDERS`); symbolic links (``/bin -> usr/bin``) are
    left as they are, since they lead into the system."""
    return sorted(
        str(entry)
        for entry in Path("/").iterdir()
        if entry.name not in SYSTEM_FOLDERS and entry.is_dir() and not entry.is_symlink()
    )


#: Lock files of the user ids in use. A grading process holds the lock of each id it runs student code as, until
#: it exits, so that two batches graded at once on one machine never share one: the per-user process limit (which
#: stops a fork bomb) and the files a user may touch stay each batch's own.
UID_LOCKS = Path("/run/mechinterp-course/uids")
#: slot -> (user id, the open lock file that holds it), in this process.
_held_uids: dict[int, tuple[int, int]] = {}


def slot_uid(slot: int) -> int | None:
    """The user id student code runs as in grading slot ``slot`` (None unless the grader runs as root): the first
    of ``UID_BASE + slot``, then 100 more each time, that no account of the machine has and no other grading
    process holds."""
    if os.geteuid() != 0:
        return None
    if slot in _held_uids:
        return _held_uids[slot][0]
    import fcntl
    import pwd

    UID_LOCKS.mkdir(parents=True, exist_ok=True, mode=0o700)
    uid = UID_BASE + slot
    while True:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            fd = os.open(UID_LOCKS / f"{uid}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # another batch is using it
                os.close(fd)
            else:
                _held_uids[slot] = (uid, fd)  # the lock lasts as long as this process
                return uid
        uid += 100


# --------------------------------------------------------------------------------------------------------------
# What the box achieved, in words (read by the grader from the status file)
# --------------------------------------------------------------------------------------------------------------


def report(status: dict) -> list[str]:
    """The protections in force, one line each."""
    lines = []
    if status.get("namespaces"):
        lines.append(
            "its own PID namespace: the kernel and everything it starts end together; the grader is out of "
            "sight and reach"
        )
        lines.append("its own network namespace: no network at all")
    if status.get("hidden"):
        lines.append(
            "its own mount namespace: solutions/, the reference answers and checks, the gradebook and the "
            "submissions are hidden"
        )
    if status.get("uid") is not None:
        lines.append(
            f"a user of its own (uid {status['uid']}): cannot write the installed library or signal the grader"
        )
    limits = status.get("limits") or {}
    if limits:
        lines.append(
            f"limits: {limits['memory_mb']} MB of address space, {limits['processes']} processes, files "
            f"up to {limits['file_mb']} MB, {limits['cpu_seconds']} s of CPU time, {limits['tmp_mb']} MB "
            f"private /tmp"
        )
    return lines


def missing(status: dict) -> list[str]:
    """The protections that could not be had, one line each (empty when the box is complete)."""
    lines = []
    if not status.get("namespaces"):
        lines.append(
            "no namespaces (needs root or user namespaces): student code shares the network, can see the "
            "course's files (solutions, reference answers) and the grader's processes"
        )
    elif not status.get("hidden"):
        lines.append("no private filesystem: student code can read the course's files")
    if status.get("uid") is None:
        lines.append("no separate user (needs root): student code runs as the grading user")
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m mechinterp_course.instructor.sandbox SPEC.json -- COMMAND ...", file=sys.stderr)
        return 2
    return launch(Spec.read(argv[0]), argv[2:])


if __name__ == "__main__":
    sys.exit(main())
