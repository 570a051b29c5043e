"""``deepsift serve`` and ``deepsift admin ...``: run the server, migrate its database, manage users.

    deepsift serve [--host 127.0.0.1] [--port 8000] [--data-dir DIR] [--database-url URL] [--processes N]
    deepsift admin migrate                       # upgrade the database (serve does it on start)
    deepsift admin add-user NAME [--role host] [--password-stdin]
    deepsift admin set-role NAME host|participant|admin
    deepsift admin reset-password NAME [--password-stdin]   # ends every token and session of NAME
    deepsift admin disable NAME | enable NAME    # a disabled account's tokens and sessions stop at once

Building these parsers imports nothing but the grammar (:mod:`deepsift.cliargs`): FastAPI,
SQLAlchemy and uvicorn load inside the handlers.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..cliargs import EXIT_OK, add_command, int_range, subgroup, verbosity
from ..exceptions import UsageError

ROLES = ("participant", "host", "admin")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def add_database_options(p: argparse.ArgumentParser) -> None:
    """``--data-dir`` and ``--database-url``: where a server-side command finds its database and files."""
    g = p.add_argument_group("database options")
    g.add_argument("--data-dir", metavar="DIR",
                   help="data folder: database, uploads, hidden files (default: $DEEPSIFT_DATA_DIR or "
                        "~/.local/share/deepsift)")
    g.add_argument("--database-url", metavar="URL",
                   help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db (default: $DEEPSIFT_DATABASE_URL, "
                        "else SQLite in the data folder); a URL with a password belongs in $DEEPSIFT_DATABASE_URL, "
                        "since every local user can read a command line")


def register(sub: argparse._SubParsersAction, groups: dict) -> None:
    """Add ``serve`` and the ``admin`` command group."""
    p = add_command(sub, "serve", "run the web server (benchmark platform and demo); upgrades the database first",
                    description="Run the web server: the benchmark platform and the demo on one app, "
                                "with one scoring worker beside it (DEEPSIFT_CHALLENGES_SERVE_WORKERS).")
    add_database_options(p)
    p.add_argument("--host", metavar="ADDRESS", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int_range(1, 65535, name="port"), default=8000, help="TCP port")
    p.add_argument("--processes", type=int_range(1, 64, name="process count"), default=1,
                   help="server processes (uvicorn workers)")
    p.add_argument("--domain", action="append", metavar="NAME",
                   help="domain to mount; repeat for several (default: every installed one)")
    p.add_argument("--log-level", choices=LOG_LEVELS,
                   help="server log level (default: info; warning with --quiet, debug with --verbose)")
    p.set_defaults(func=cmd_serve)

    admin = subgroup(sub, groups, "admin", "server administration: database migrations and users")
    p = add_command(admin, "migrate", "upgrade the database to the newest schema")
    add_database_options(p)
    p.set_defaults(func=cmd_migrate)
    p = add_command(admin, "add-user", "create a user (prompted password, or --password-stdin)")
    add_database_options(p)
    p.add_argument("username", help="the new account's name")
    p.add_argument("--role", choices=ROLES, default="participant", help="host: may create challenges")
    p.add_argument("--email", help="e-mail address (default: none)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    p.set_defaults(func=cmd_add_user)
    p = add_command(admin, "set-role", "make a user a host or a participant")
    add_database_options(p)
    p.add_argument("username", help="the account")
    p.add_argument("role", choices=ROLES, help="its new role (admin: a host over every challenge and account)")
    p.set_defaults(func=cmd_set_role)
    p = add_command(admin, "reset-password", "set a user's password (random unless --password-stdin); "
                                             "ends every token and session of theirs")
    add_database_options(p)
    p.add_argument("username", help="the account")
    p.add_argument("--password-stdin", action="store_true", help="read the new password from the first line of stdin")
    p.set_defaults(func=cmd_reset_password)
    for name, text in (("disable", "disable an account: its tokens and sessions stop working at once"),
                       ("enable", "enable a disabled account again (its old tokens stay revoked)")):
        p = add_command(admin, name, text)
        add_database_options(p)
        p.add_argument("username", help="the account")
        p.set_defaults(func=cmd_disable, disable=name == "disable")


def settings_from_args(args: argparse.Namespace, export: bool = False):  # type: ignore[no-untyped-def]
    """Settings from the environment and ``--data-dir``/``--database-url``/``--domain``.

    ``export``: also put those options in the environment, for the server's worker processes.
    """
    from pydantic import ValidationError

    from .settings import Settings

    given = {"DEEPSIFT_DATA_DIR": os.path.abspath(args.data_dir) if getattr(args, "data_dir", None) else None,
             "DEEPSIFT_DATABASE_URL": getattr(args, "database_url", None),
             "DEEPSIFT_DOMAINS": ",".join(args.domain) if getattr(args, "domain", None) else None}
    given = {k: v for k, v in given.items() if v}
    _warn_password_in_argv(getattr(args, "database_url", None))
    if export:
        os.environ.update(given)
    try:
        settings = Settings(**{k.removeprefix("DEEPSIFT_").lower(): v for k, v in given.items()})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UsageError(f"setting DEEPSIFT_{str(err['loc'][0]).upper()}: {err['msg']}") from None
    from .db import make_private_dir

    try:
        make_private_dir(settings.data_dir)  # owner-only (0700), whichever command creates it
    except OSError as exc:
        raise UsageError(f"cannot create the data folder {settings.data_dir}: {exc.strerror or exc}") from None
    return settings


def _warn_password_in_argv(url: str | None) -> None:
    """One line when ``--database-url`` carries a password: every local user can read a command line."""
    if not url:
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        has_password = make_url(url).password is not None
    except (ArgumentError, ValueError):
        return  # the settings check names a bad URL
    if has_password:
        from ..output import note

        note("deepsift: warning: the database password in --database-url is visible to every local user (ps, "
             "/proc); set DEEPSIFT_DATABASE_URL instead")


def migrate(settings) -> list[str]:  # type: ignore[no-untyped-def]
    """Upgrade the settings' database; returns its revisions (errors as one line)."""
    from .migrate import upgrade_database

    return upgrade_database(settings.db_url)


def cmd_serve(args: argparse.Namespace) -> int:
    """Migrate, start the domains' background workers, serve until stopped."""
    import functools

    import uvicorn

    from ..output import note
    from .slowclients import GuardedH11Protocol

    if args.processes > 1:  # the processes share their rate-limit counts (else each allows the whole limit)
        os.environ["DEEPSIFT_RATE_LIMIT_STORE"] = "file"
    settings = settings_from_args(args, export=True)
    revs = migrate(settings)
    os.environ["DEEPSIFT_MIGRATE_ON_START"] = "false"  # done once here, not in every worker process
    level = args.log_level or {-1: "warning", 0: "info", 1: "debug"}[verbosity(args)]
    note(f"deepsift: database {settings.db_url.split('@')[-1]} at {', '.join(revs)}; serving on "
         f"http://{args.host}:{args.port}")
    children = _start_background(settings, verbosity(args))
    try:
        _run_uvicorn(uvicorn.Config("deepsift.server.app:app_from_env", factory=True, host=args.host, port=args.port,
                                    workers=args.processes, log_level=level, proxy_headers=settings.trusted_proxy,
                                    forwarded_allow_ips=settings.trusted_proxy_ips, server_header=False,
                                    http=functools.partial(GuardedH11Protocol, header_timeout=settings.header_timeout_s,
                                                           body_idle_timeout=settings.body_idle_timeout_s)))
    finally:
        _stop_background(children)
    return EXIT_OK


LISTENING = "deepsift: listening on "
"""The start of the line ``deepsift serve`` says once its port takes connections (scripts and tests wait on it)."""


def _run_uvicorn(config) -> None:  # type: ignore[no-untyped-def]
    """Serve as ``uvicorn.run`` does, saying :data:`LISTENING` once the port takes connections (at any log level)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from ..output import note

    said = f"{LISTENING}http://{config.host}:{config.port}"

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):  # type: ignore[no-untyped-def]
            await super().startup(sockets=sockets)  # exits the process when the port cannot be bound
            note(said)

    server = Server(config)
    try:
        if config.workers > 1:  # the processes share a socket bound here; listening now, it takes connections
            sock = config.bind_socket()  # from here on: the kernel queues them until a process accepts
            sock.listen(config.backlog)
            note(said)
            import inspect  # older uvicorn (pyproject allows >= 0.29) takes the processes' target; newer makes its own

            old = {"target": uvicorn.Server(config).run} if "target" in inspect.signature(Multiprocess).parameters else {}
            Multiprocess(config, sockets=[sock], **old).run()
            return
        server.run()
    except KeyboardInterrupt:
        pass
    if config.workers == 1 and not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE, as uvicorn.run exits


def _start_background(settings, level: int) -> list:  # type: ignore[no-untyped-def]
    """Start the domains' background commands (e.g. scoring workers); they die with this process."""
    import subprocess

    from ..output import note
    from .domains import installed_domains

    def die_with_parent() -> None:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG

    flags = {-1: ["--quiet"], 0: [], 1: ["--verbose"]}[level]
    procs = []
    for dom in installed_domains(list(settings.domains) if settings.domains else None):
        for argv in (dom.background(settings) if dom.background else []):
            procs.append(subprocess.Popen([sys.executable, "-m", "deepsift", *argv, *flags],
                                          preexec_fn=die_with_parent))
            note(f"deepsift: started `deepsift {' '.join(argv)}` (pid {procs[-1].pid})")
    return procs


def _stop_background(procs: list) -> None:  # type: ignore[type-arg]
    import subprocess

    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


def cmd_migrate(args: argparse.Namespace) -> int:
    """Upgrade the database and print its revisions."""
    print(f"database at {', '.join(migrate(settings_from_args(args)))}")
    return EXIT_OK


def _read_password(args: argparse.Namespace) -> str:
    import getpass

    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise UsageError("no terminal to prompt for a password: pass --password-stdin")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise UsageError("the passwords differ")
    return first


def cmd_add_user(args: argparse.Namespace) -> int:
    """Create one account."""
    from .accounts import create_user
    from .db import Database

    settings = settings_from_args(args)
    migrate(settings)
    password = _read_password(args)
    db = Database(settings.db_url)
    try:
        with db.session(write=True) as s:
            user = create_user(s, username=args.username, password=password, email=args.email, role=args.role)
            print(f"created {user.role} {user.username}")
    finally:
        db.dispose()
    return EXIT_OK


def cmd_set_role(args: argparse.Namespace) -> int:
    """Change one account's role."""
    from .accounts import set_role
    from .db import Database

    settings = settings_from_args(args)
    migrate(settings)
    db = Database(settings.db_url)
    try:
        with db.session(write=True) as s:
            user = set_role(s, args.username, args.role)
            print(f"{user.username} is now a {user.role}")
    finally:
        db.dispose()
    return EXIT_OK


def _write(args: argparse.Namespace, fn):  # type: ignore[no-untyped-def]
    """Run ``fn(session)`` in one write transaction on the (migrated) database of ``args``."""
    from .db import Database

    settings = settings_from_args(args)
    migrate(settings)
    db = Database(settings.db_url)
    try:
        with db.session(write=True) as s:
            return fn(s)
    finally:
        db.dispose()


def cmd_reset_password(args: argparse.Namespace) -> int:
    """Reset one account's password; prints a generated one."""
    from .accounts import reset_password

    given = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else None
    if args.password_stdin and not given:
        raise UsageError("no password on stdin")
    name, password = _write(args, lambda s: (lambda u: (u[0].username, u[1]))(reset_password(s, args.username, given)))
    print(f"password of {name} reset; every token and session ended" + ("" if given else f"; new password: {password}"))
    return EXIT_OK


def cmd_disable(args: argparse.Namespace) -> int:
    """Disable or enable one account."""
    from .accounts import set_disabled

    name = _write(args, lambda s: set_disabled(s, args.username, args.disable).username)
    print(f"{name} is now {'disabled (tokens and sessions ended)' if args.disable else 'enabled'}")
    return EXIT_OK
