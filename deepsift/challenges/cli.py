"""``deepsift challenges ...``: host tools on the server machine, the scoring worker, and the client.

    deepsift challenges create spec.yaml --host-user NAME     # on the server: DB + storage, imports test sets
    deepsift challenges worker [--once] [--poll-seconds 0.5]  # scoring worker (any number, any machine)
    deepsift challenges login --server URL --username NAME    # saves a token in the client config
    deepsift challenges submit --server URL --challenge C --phase P FILE [--model-spec spec.json] [--wait]
    deepsift challenges status [ID] [--challenge C --phase P]
    deepsift challenges leaderboard --challenge C --phase P [--part private] [--sort ap] [--format csv]
    deepsift challenges download --challenge C --phase P --out DIR
    deepsift challenges team create|join|show|leave --challenge C [NAME | INVITE_CODE]

Exit codes: 0 done; 1 an error stopped the command (the server's reason on one line); 2 bad usage;
3 done but an input failed: ``submit --wait`` for a submission whose scoring failed (the row says why).
The client commands load only httpx; ``create`` and ``worker`` load the server's database code, and
torch only when a test set's images are re-encoded or a model submission is run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cliargs import (EXIT_OK, EXIT_PARTIAL, add_command, add_output_options, existing_file, positive_float,
                       positive_int, subgroup)
from ..exceptions import UsageError
from ..server.cli import add_database_options

SUB_COLUMNS = ["id", "phase", "team", "kind", "filename", "state", "position", "public_score", "private_score",
               "wait_seconds", "run_seconds", "reason"]
"""Columns of a submission row in the table and CSV formats (json/jsonl rows carry every field)."""
TEAM_COLUMNS = ["name", "members", "captain", "invite_code", "disqualified"]


def _server(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", metavar="URL",
                   help="platform URL (default: $DEEPSIFT_SERVER, else the client config's default server)")


def _challenge_phase(p: argparse.ArgumentParser, required: bool = True) -> None:
    note = "" if required else " (default: none; with --phase, list your team's submissions)"
    p.add_argument("--challenge", required=required, metavar="SLUG", help="challenge slug" + note)
    p.add_argument("--phase", required=required, metavar="SLUG", help="phase slug" + note)


def register(sub: argparse._SubParsersAction, groups: dict) -> None:
    """Add the ``challenges`` command group."""
    ch = subgroup(sub, groups, "challenges", "benchmark platform: host challenges, score submissions, take part")
    p = add_command(ch, "create", "create a challenge from a YAML spec on the server machine (imports test sets)")
    p.add_argument("spec", type=existing_file, help="YAML spec file (see deepsift.challenges.spec)")
    p.add_argument("--host-user", required=True, metavar="NAME",
                   help="the host account that owns it (deepsift admin add-user NAME --role host)")
    p.add_argument("--threads", type=positive_int, default=4, help="threads re-encoding test images")
    add_database_options(p)
    p.set_defaults(func=cmd_create)

    p = add_command(ch, "worker", "score queued submissions (run any number of them, on any machine)")
    add_database_options(p)
    p.add_argument("--poll-seconds", type=positive_float, default=0.5, metavar="SECONDS",
                   help="how often an idle worker looks at the queue")
    p.add_argument("--once", action="store_true", help="stop when the queue is empty")
    p.add_argument("--max-jobs", type=positive_int, metavar="N", help="stop after this many jobs (default: never)")
    p.add_argument("--name", help="worker name in job histories (default: host:pid)")
    p.set_defaults(func=cmd_worker)

    p = add_command(ch, "login", "get an API token and save it in the client config")
    _server(p)
    p.add_argument("--username", required=True, help="your account")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin (default: prompt)")
    p.set_defaults(func=cmd_login)

    p = add_command(ch, "submit", "submit predictions (CSV/JSON/JSONL) or an ONNX model; prints its row")
    _server(p)
    _challenge_phase(p)
    p.add_argument("file", type=existing_file, help="predictions file (CSV/JSON/JSONL), or an ONNX model")
    p.add_argument("--kind", choices=("auto", "predictions", "model"), default="auto",
                   help="what FILE is; auto: a .onnx file is a model the platform runs, anything else predictions")
    p.add_argument("--model-spec", metavar="JSON", type=existing_file,
                   help="the model's preprocessing and output spec (default: 224 px centre crop, ImageNet "
                        "mean/std, output = P(fake))")
    p.add_argument("--note", help="a note shown with the submission (default: none)")
    p.add_argument("--method", metavar="NAME", help="the method's name, shown on the boards (default: none)")
    p.add_argument("--method-description", metavar="TEXT", help="a short description, shown on the boards (default: none)")
    p.add_argument("--method-url", metavar="URL", help="http(s) link to the paper or code (default: none)")
    p.add_argument("--not-on-board", action="store_true",
                   help="keep this entry off the boards (your team's counting entry is picked among the shown ones)")
    p.add_argument("--wait", action="store_true", help="wait until it is scored (exit 0) or failed (exit 3)")
    p.add_argument("--timeout", type=positive_float, default=3600.0, metavar="SECONDS",
                   help="how long --wait waits before giving up (exit 1)")
    add_output_options(p)
    p.set_defaults(func=cmd_submit)

    p = add_command(ch, "status", "one submission, or your team's submissions in a phase")
    _server(p)
    p.add_argument("id", nargs="?", help="submission id (default: list --challenge/--phase)")
    _challenge_phase(p, required=False)
    add_output_options(p)
    p.set_defaults(func=cmd_status)

    p = add_command(ch, "leaderboard", "a phase's leaderboard (no login needed)")
    _server(p)
    _challenge_phase(p)
    p.add_argument("--part", default="public", choices=("public", "private"),
                   help="which part of the test set (private: after the phase ends)")
    p.add_argument("--sort", metavar="METRIC", help="metric to sort by (default: the ranking metric)")
    p.add_argument("--order", choices=("asc", "desc"), help="sort order (default: best first)")
    add_output_options(p)
    p.set_defaults(func=cmd_leaderboard)

    p = add_command(ch, "download", "download a phase's unlabelled test archive (checked by SHA-256)")
    _server(p)
    _challenge_phase(p)
    p.add_argument("--out", metavar="PATH", help="file or folder (default: the current folder)")
    p.add_argument("--extract", action="store_true",
                   help="also unpack the images into a folder beside the archive (CHALLENGE-PHASE/images/), "
                        "ready for 'deepsift detect'")
    p.set_defaults(func=cmd_download)

    team = subgroup(ch, groups, "team", "your team in a challenge: create, join, show, leave")
    for name, text, arg, arg_help in (
            ("create", "create a team and join it (you are its captain)", "name", "the team's name"),
            ("join", "join a team with the invite code its members give you", "invite_code", "the invite code"),
            ("show", "your team: members, captain, invite code", None, None),
            ("leave", "leave your team (until it submits; the captain hands over first)", None, None)):
        p = add_command(team, name, text)
        _server(p)
        p.add_argument("--challenge", required=True, metavar="SLUG", help="challenge slug")
        if arg:  # positional
            p.add_argument(arg, help=arg_help)
        add_output_options(p)
        p.set_defaults(func=cmd_team, team_action=name)


# -- server side -----------------------------------------------------------------------------------
def cmd_create(args: argparse.Namespace) -> int:
    """Create the challenge and import each phase's test set."""
    from sqlalchemy import select

    from ..output import note
    from ..server.cli import migrate, settings_from_args
    from ..server.db import Database
    from ..server.models import User
    from ..server.storage import Storage
    from . import service
    from .spec import load_spec
    from .testsets import collect

    spec = load_spec(args.spec)
    settings = settings_from_args(args)
    migrate(settings)
    db = Database(settings.db_url)
    storage = Storage(settings.storage_dir)
    try:
        items = {ph.slug: collect(ph.testset) for ph in spec.phases if ph.testset is not None}
        for ph in spec.phases:  # before anything is created: a phase ranked on unseen generators needs some
            if ph.slug in items:
                service.check_split((it.generator for it in items[ph.slug] if it.label == 1), ph.train_generators,
                                    ph.rank_on, ph.slug)
        with db.session(write=True) as s:
            host = s.scalar(select(User).where(User.username == args.host_user.lower()))
            if host is None:
                raise UsageError(f"no user {args.host_user!r}: create it with "
                                 f"`deepsift admin add-user {args.host_user} --role host`")
            service.create_challenge(s, spec, host)
        for ph in spec.phases:
            if ph.slug in items:
                ts = service.import_testset(db, storage, spec.slug, ph.slug, items[ph.slug],
                                            image_format=spec.image_format, jpeg_quality=spec.jpeg_quality,
                                            resize=spec.resize, seed=ph.testset.seed, threads=args.threads)  # type: ignore[union-attr]
                note(f"{spec.slug}/{ph.slug}: {ts.n_images} test images ({ts.n_public} public)")
    finally:
        db.dispose()
    print(f"created challenge {spec.slug} with {len(spec.phases)} phase(s)")
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    """Score queued submissions until stopped (or the queue is empty with --once)."""
    from ..output import note
    from ..server.cli import settings_from_args
    from ..server.db import Database
    from ..server.storage import Storage
    from .service import warm_keys
    from .settings import ChallengeSettings
    from .worker import Worker, install_signal_handlers, wait_for_database

    settings = settings_from_args(args)
    db = Database(settings.db_url)
    wait_for_database(db)
    hide = tuple(str(p) for p in {settings.data_dir.resolve(), settings.storage_dir.resolve()})
    worker = Worker(db, Storage(settings.storage_dir), settings.section(ChallengeSettings, "challenges"),
                    name=args.name, poll_s=args.poll_seconds, hide=hide)
    install_signal_handlers(worker)
    warm_keys(db, worker.storage)
    note(f"worker {worker.name}: ready, polling every {args.poll_seconds:g} s")
    try:
        n = worker.run(once=args.once, max_jobs=args.max_jobs)
    finally:
        db.dispose()
    note(f"worker {worker.name}: {n} job(s)")
    return EXIT_OK


# -- client side -----------------------------------------------------------------------------------
def _client(args: argparse.Namespace, need_token: bool = True):  # type: ignore[no-untyped-def]
    from .client import Client

    url, token = _resolve(args)
    if need_token and not token:
        raise UsageError("no API token: set DEEPSIFT_TOKEN or run `deepsift challenges login --server URL "
                         "--username NAME`")
    return Client(url, token)


def _resolve(args: argparse.Namespace) -> tuple[str, str | None]:
    """The server and token, with a missing server named as the option to give."""
    from .client import NoServerError, resolve

    try:
        return resolve(args.server)
    except NoServerError:
        raise UsageError("no server: pass --server URL or set DEEPSIFT_SERVER") from None


def cmd_login(args: argparse.Namespace) -> int:
    """Trade the password for a token and keep it in the client config (0600)."""
    import getpass

    from .client import Client, save_token

    url, _ = _resolve(args)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif not sys.stdin.isatty():
        raise UsageError("no terminal to prompt for a password: pass --password-stdin")
    else:
        password = getpass.getpass("password: ")
    with Client(url) as c:
        token = c.login(args.username, password)
    path = save_token(url, token)
    print(f"logged in to {url} as {args.username}; token saved in {path}")
    return EXIT_OK


def _write_submissions(rows: list[dict], args: argparse.Namespace) -> None:
    from ..output import open_output, write_rows

    with open_output(args.out) as out:
        write_rows(rows, args.format, SUB_COLUMNS, out, formula_safe=True)


def cmd_submit(args: argparse.Namespace) -> int:
    """Upload; with --wait, poll until scored (0) or failed (3, the reason on stderr)."""
    from ..output import note

    kind = args.kind if args.kind != "auto" else "model" if Path(args.file).suffix.lower() == ".onnx" else "predictions"
    spec = None
    if args.model_spec:
        if kind != "model":
            raise UsageError(f"--model-spec describes a model, but {args.file} is sent as predictions "
                             f"(--kind model sends it as a model)")
        try:
            spec = Path(args.model_spec).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--model-spec {args.model_spec}: {getattr(exc, 'strerror', None) or exc}") from None
    entry = {"method_name": args.method, "method_description": args.method_description,
             "method_url": args.method_url, "public": False if args.not_on_board else None}
    with _client(args) as c:
        sub = c.submit(args.challenge, args.phase, args.file, kind=kind, preprocessing=spec, note=args.note or "",
                       **entry)
        note(f"submitted {sub['id']}: {sub['state']}" + (f", position {sub['position']}" if sub.get("position") else ""))
        if args.wait:
            sub = c.wait(sub["id"], args.timeout)
    _write_submissions([sub], args)
    if sub["state"] == "failed":
        print(f"deepsift: submission {sub['id']} failed: {sub.get('reason') or 'no reason given'}", file=sys.stderr)
        return EXIT_PARTIAL
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    """One submission (by id) or the team's submissions in a phase."""
    if not args.id and not (args.challenge and args.phase):
        raise UsageError("give a submission id, or --challenge and --phase")
    with _client(args) as c:
        rows = [c.submission(args.id)] if args.id else c.submissions(args.challenge, args.phase)
    _write_submissions(rows, args)
    return EXIT_OK


def cmd_leaderboard(args: argparse.Namespace) -> int:
    """The phase's leaderboard as rows (rank, team, metrics (seen/unseen/all when split), 95 % interval, flags)."""
    from ..output import open_output, write_rows

    with _client(args, need_token=False) as c:
        if args.format == "csv":  # one CSV form: the platform's own (GET .../leaderboard?format=csv), verbatim
            text = c.leaderboard(args.challenge, args.phase, args.part, args.sort, args.order, fmt="csv")
            with open_output(args.out) as out:
                out.write(text)
            return EXIT_OK
        board = c.leaderboard(args.challenge, args.phase, args.part, args.sort, args.order)
    splits = board.get("splits")  # seen / unseen / all side by side, as the CSV board has them
    metrics = [f"{m}_{on}" for m in board["columns"] for on in splits] if splits else board["columns"]
    cols = ["rank", "team", *metrics, "ci95_low", "ci95_high", "submitted_at", "submissions", "flags"]  # the API's CSV
    rows = [{"rank": r["rank"], "team": r["team"],
             **({f"{m}_{on}": r["split"][on][m] for m in board["columns"] for on in splits} if splits else r["metrics"]),
             "ci95_low": (r["ci95"] or [None, None])[0], "ci95_high": (r["ci95"] or [None, None])[1],
             "submissions": r["submissions"], "submitted_at": r["submitted_at"],
             "flags": " ".join(r.get("flags", []))} for r in board["rows"]]
    with open_output(args.out) as out:
        write_rows(rows, args.format, cols, out, formula_safe=True)
    return EXIT_OK


def cmd_download(args: argparse.Namespace) -> int:
    """Download the test archive (progress bar on a terminal) and print where it is."""
    with _client(args) as c:
        path = c.download(args.challenge, args.phase, args.out or ".")
    if args.extract:
        from ..outplaces import is_special_file
        from .client import extract_images

        if is_special_file(path):
            raise UsageError("--extract unpacks a downloaded file: give --out a folder or a file name")

        path = extract_images(path, path.with_name(f"{args.challenge}-{args.phase}"))
    print(path)
    return EXIT_OK


def cmd_team(args: argparse.Namespace) -> int:
    """Create, join, show or leave your team in a challenge; prints the team as one row."""
    from ..output import note, open_output, write_rows

    with _client(args) as c:
        if args.team_action == "create":
            team = c.create_team(args.challenge, args.name)
        elif args.team_action == "join":
            team = c.join_team(args.challenge, args.invite_code)
        elif args.team_action == "leave":
            team = c.leave_team(args.challenge)
            note(f"left the team in {args.challenge}" + ("" if team else "; you were its last member: it is gone"))
        else:
            team = c.team(args.challenge)
    if team is None:
        return EXIT_OK
    row = {**team, "members": ", ".join(team["members"]) if args.format in ("table", "csv") else team["members"]}
    with open_output(args.out) as out:
        write_rows([row], args.format, TEAM_COLUMNS, out, formula_safe=True)
    return EXIT_OK
