"""Pages made from the code at build time (mkdocs-gen-files), so they cannot drift from it.

- ``reference/cli.md``: every command's ``--help``, walked from :func:`deepsift.cli.build_parser`;
- ``reference/settings.md``: every setting of the server, platform and demo, from their pydantic
  classes (name, environment variable, type, default, description);
- the field tables appended to ``formats/challenge-spec.md`` and ``formats/model-spec.md``, from
  the models that validate those files.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import mkdocs_gen_files

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ["COLUMNS"] = "100"  # argparse wraps help at the terminal's width: fix it


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _walk(parser: argparse.ArgumentParser, path: list[str]):
    yield path, parser
    for name, sub in _subcommands(parser).items():
        yield from _walk(sub, path + [name])


def cli_page() -> str:
    """The command-line reference: one section per command, its help as printed."""
    from deepsift.cli import build_parser

    lines = ["# Command line", "",
             "Generated from the argparse parsers at build time: this is exactly what "
             "`deepsift COMMAND --help` prints. The grammar shared by every command (exit codes, "
             "`--out`/`--format`, `-v`/`-q`) is described in [Exit codes and output](output.md).", ""]
    entries = list(_walk(build_parser(), ["deepsift"]))
    lines += ["| command | summary |", "| --- | --- |"]
    for path, p in entries[1:]:
        summary = (p.description or "").strip().split("\n")[0].split(". ")[0]
        anchor = "-".join(path).lower()
        lines.append(f"| [`{' '.join(path)}`](#{anchor}) | {summary.replace('|', '/')} |")
    lines.append("")
    for path, p in entries:
        anchor = "-".join(path).lower()
        lines += [f"## `{' '.join(path)}` {{ #{anchor} }}", "", "```text", p.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


def _type_name(annotation: object) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("pathlib.", "").replace("|", "or")


def _default(field) -> str:
    if field.default_factory is not None:
        return "(computed)"
    value = field.default
    if value is None or value == "":
        return "—"
    return f"`{value!r}`" if not isinstance(value, str) else f"`{value}`"


def settings_table(cls, prefix: str) -> list[str]:
    """Rows of one settings class: variable, type, default, meaning."""
    rows = ["| variable | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, field in cls.model_fields.items():
        if name == "domain_overrides":
            continue
        desc = (field.description or "").replace("|", "/")
        rows.append(f"| `{prefix}{name.upper()}` | {_type_name(field.annotation)} | {_default(field)} | {desc} |")
    return rows


SETTINGS_INTRO = """
# Settings (environment)

Generated from the settings classes at build time. `deepsift serve` (the platform and the demo),
`deepsift challenges worker` and `deepsift admin` read these variables; a `.env` file is not read.

Other variables:

| variable | used by | meaning |
| --- | --- | --- |
| `DEEPSIFT_HOME` | detector | cache of converted heads (`heads/<owner>--<name>`), ONNX exports (`onnx/`) and `--backend auto` measurements (`backends.json`); default `~/.cache/deepsift` |
| `DEEPSIFT_BACKEND` | detector commands | the default of `--backend`: `auto`, `torch` or `onnx` (unset: `auto`); `--backend` wins over it, another value is an error naming this setting |
| `DEEPSIFT_NO_JPEG_REGION` | detector | `1`: never decode JPEG regions (whole-file decoding, same pixels) |
| `DEEPSIFT_NO_FAST_DECODE` | detector | `1`: decode with Pillow alone, not simplejpeg / isal (same pixels, more core time) |
| `DEEPSIFT_SERVER`, `DEEPSIFT_TOKEN` | challenges client | platform URL and API token (else `~/.config/deepsift/client.json`) |
| `DEEPSIFT_CLIENT_CONFIG` | challenges client | another path for that file |
| `DEEPSIFT_MIGRATE_ON_START` | server | `false`: do not upgrade the database at start-up |
| `HF_HOME`, `HF_HUB_OFFLINE` | detector | the Hugging Face cache, and offline mode (a hub id not cached then fails at once) |
| `XDG_DATA_HOME`, `XDG_CONFIG_HOME` | server, client | where the default data folder and the client config live |

`deepsift serve` also starts `DEEPSIFT_CHALLENGES_SERVE_WORKERS` scoring workers beside itself
(default 1; 0 when separate `deepsift challenges worker` processes do the scoring); they get the
database URL and the data folder through the environment, never on their command line.

A database URL with a password belongs in `DEEPSIFT_DATABASE_URL`, not in `--database-url`: a
command line is readable by every local user (`ps`, `/proc/PID/cmdline`), the environment only by
the process's owner. A standalone worker is started as
`DEEPSIFT_DATABASE_URL=postgresql+psycopg://user:password@db/deepsift deepsift challenges worker`
(or with the variable exported by its service manager, e.g. systemd's `EnvironmentFile=`).
"""


def settings_page() -> str:
    """Every setting read from the environment, generated from the settings classes."""
    from deepsift.challenges.settings import ChallengeSettings
    from deepsift.demo.settings import DemoSettings
    from deepsift.server.settings import Settings

    lines = [SETTINGS_INTRO.strip(), ""]
    for title, cls, prefix in (("Server (`deepsift serve`, platform and demo)", Settings, "DEEPSIFT_"),
                               ("Benchmark platform", ChallengeSettings, "DEEPSIFT_CHALLENGES_"),
                               ("Demo", DemoSettings, "DEEPSIFT_DEMO_")):
        lines += [f"## {title}", "", (cls.__doc__ or "").strip().split("\n")[0], ""]
        lines += settings_table(cls, prefix) + [""]
    return "\n".join(lines)


def model_table(cls) -> list[str]:
    """Rows of one pydantic model: field, type, default, constraints/meaning."""
    rows = ["| field | type | default | constraints |", "| --- | --- | --- | --- |"]
    for name, field in cls.model_fields.items():
        required = field.is_required()
        constraints = ", ".join(str(m) for m in field.metadata) or ""
        desc = "; ".join(x for x in (field.description or "", constraints) if x).replace("|", "/")
        rows.append(f"| `{name}` | {_type_name(field.annotation)} | {'required' if required else _default(field)} | {desc} |")
    return rows


def format_tables() -> None:
    """Append the field tables to the hand-written format pages."""
    from deepsift.challenges.sandbox import Preprocessing
    from deepsift.challenges.spec import ChallengeSpec, PhaseSpec, TestSetSpec

    with mkdocs_gen_files.open("formats/challenge-spec.md", "a") as fh:
        for title, cls in (("Challenge", ChallengeSpec), ("Phase (`phases[]`)", PhaseSpec),
                           ("Test set (`phases[].testset`)", TestSetSpec)):
            fh.write(f"\n### {title} fields\n\nGenerated from `{cls.__module__}.{cls.__name__}`.\n\n")
            fh.write("\n".join(model_table(cls)) + "\n")
    with mkdocs_gen_files.open("formats/model-spec.md", "a") as fh:
        fh.write("\n## Every field\n\nGenerated from `deepsift.challenges.sandbox.Preprocessing`.\n\n")
        fh.write("\n".join(model_table(Preprocessing)) + "\n")


with mkdocs_gen_files.open("reference/cli.md", "w") as fh:
    fh.write(cli_page())
with mkdocs_gen_files.open("reference/settings.md", "w") as fh:
    fh.write(settings_page())
format_tables()
