"""One command-line grammar: every command documents, checks and names its options the same way.

These tests walk every registered command (new areas are covered as soon as they register), so a
command added later without help text, with an unchecked number or with its own spelling of a
shared option fails here.
"""
from __future__ import annotations

import argparse
import math
import re

import pytest

from deepsift import cliargs
from deepsift.cli import build_parser, main


def commands(parser: argparse.ArgumentParser | None = None, path: tuple[str, ...] = ()):
    """(command path, parser) for every leaf command."""
    parser = parser or build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs and path:
        yield " ".join(path), parser
    for action in subs:
        for name, child in action.choices.items():
            yield from commands(child, path + (name,))


ALL = dict(commands())
NUMERIC_TYPES = {cliargs.positive_int, cliargs.non_negative_int, cliargs.finite_float, cliargs.positive_float,
                 cliargs.non_negative_float, cliargs.probability, cliargs.fraction, cliargs.open_fraction}
SKIP = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)


def options(parser: argparse.ArgumentParser):
    return [a for a in parser._actions if not isinstance(a, SKIP)]


def test_the_walk_sees_every_area():
    assert {"detect", "embed", "heads fit", "data info", "data build", "eval scores", "baseline predict",
            "train"} <= set(ALL)


def test_train_takes_the_runtime_options_and_every_config_key_as_a_flag():
    from deepsift.train.config import FIELDS

    flags = {f for a in options(ALL["train"]) for f in a.option_strings}
    assert {"--device", "--workers", "--batch-size", "--precision"} <= flags
    assert {"--" + k.replace("_", "-") for k in FIELDS} <= flags


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_option_has_help_with_its_default_and_no_markup(name, capsys):
    parser = ALL[name]
    for action in options(parser):
        assert action.help, f"{name}: {action.option_strings or action.dest} has no help text"
    text = parser.format_help()
    one_of = {a for g in parser._mutually_exclusive_groups if g.required for a in g._group_actions}
    assert "``" not in text and not re.search(r":(func|class|meth|mod|data):`", text), f"{name}: markup in --help"
    for action in options(parser):
        d = action.default
        if action.option_strings and d not in (None, False, argparse.SUPPRESS, []) and not action.required:
            shown = " ".join(map(str, d)) if isinstance(d, (list, tuple)) else str(d)
            assert f"(default: {shown})" in " ".join(text.split()), f"{name}: default of {action.option_strings}"
        elif action.option_strings and d is None and not action.required and action.nargs != 0 \
                and action not in one_of:
            assert "default" in action.help, f"{name}: {action.option_strings} defaults to None without saying so"


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_numeric_option_is_range_checked(name):
    for action in options(ALL[name]):
        assert action.type not in (int, float), f"{name}: {action.option_strings} uses a bare {action.type.__name__}"
        numeric_default = isinstance(action.default, (int, float)) and not isinstance(action.default, bool)
        if numeric_default or action.type in NUMERIC_TYPES:
            assert action.type is not None and action.type.__module__ == "deepsift.cliargs", \
                f"{name}: {action.option_strings} takes a number without a range check"


def test_shared_options_are_defined_once():
    """Every command that has --device, --batch-size, --out, --format ... gives it the same meaning."""
    shared = ("--model", "--heads", "--device", "--precision", "--backend", "--batch-size", "--workers",
              "--preprocessing", "--url-timeout", "--format", "--threshold", "--verbose", "--quiet")
    seen: dict[str, tuple] = {}
    for name, parser in ALL.items():
        for action in options(parser):
            for flag in action.option_strings:
                if flag in shared:
                    choices = tuple(action.choices) if action.choices else None
                    seen.setdefault(flag, {})[name] = (action.type, choices, action.nargs)  # type: ignore[index]
    for flag, per_command in seen.items():
        if flag in ("--format", "--model"):  # data export-wds' image --format; baselines' CLIP --model
            per_command = {k: v for k, v in per_command.items() if not k.startswith(("data export", "baseline train"))}
        assert len(set(per_command.values())) == 1, f"{flag} differs between commands: {per_command}"


def test_every_command_that_walks_image_folders_takes_follow_links_the_same_way():
    """--follow-links comes from one adder (cliargs.add_folder_options): same flag, same help, off by default."""
    walkers = ("detect", "embed", "heads fit", "baseline train", "baseline predict")
    found = {}
    for name in walkers:
        (action,) = [a for a in options(ALL[name]) if "--follow-links" in a.option_strings]
        found[name] = (tuple(action.option_strings), action.nargs, action.default, action.help)
    assert len(set(found.values())) == 1, found
    assert next(iter(found.values()))[2] is False
    assert ALL["detect"].parse_args(["-", "--follow-links"]).follow_links is True


def test_lists_are_repeatable_options_not_comma_lists():
    for name, parser in ALL.items():
        flags = {f for a in options(parser) for f in a.option_strings}
        assert "--classifiers" not in flags and "--transforms" not in flags, name
        for action in options(parser):
            if "--classifier" in action.option_strings and name in ("heads fit", "eval generators", "eval logo"):
                assert isinstance(action, argparse._AppendAction), name
    assert ALL["detect"].parse_args(["-", "--classifier", "knn"]).classifier == "knn"


def test_rows_are_written_with_out_and_format_everywhere():
    for name in ("detect", "baseline predict", "challenges submit", "challenges status", "challenges leaderboard"):
        flags = {f for a in options(ALL[name]) for f in a.option_strings}
        assert {"--out", "--format"} <= flags and "--output" not in flags and "-o" not in flags
        fmt = next(a for a in options(ALL[name]) if "--format" in a.option_strings)
        assert fmt.default == "table"


def test_eval_and_baseline_take_the_runtime_options():
    for name in ("eval generators", "eval logo", "eval robustness", "eval fpr"):
        flags = {f for a in options(ALL[name]) for f in a.option_strings}
        assert {"--device", "--precision", "--backend", "--workers", "--batch-size"} <= flags, name
    for name in ("baseline train", "baseline predict"):
        flags = {f for a in options(ALL[name]) for f in a.option_strings}
        assert {"--device", "--workers", "--batch-size"} <= flags, name


def test_val_means_one_thing():
    for name, parser in ALL.items():
        for action in options(parser):
            if "--val" in action.option_strings:
                assert action.metavar == "DATA", f"{name}: --val is not a validation dataset"


# -- range checks at parse time: exit 2, one line naming the option, the range and the value --------------
@pytest.mark.parametrize("argv, option", [
    (["eval", "scores", "--labels", "{f}", "--scores", "{f}", "--threshold", "nan"], "--threshold"),
    (["eval", "scores", "--labels", "{f}", "--scores", "{f}", "--threshold", "1.5"], "--threshold"),
    (["eval", "scores", "--labels", "{f}", "--scores", "{f}", "--bootstrap", "-5"], "--bootstrap"),
    (["eval", "logo", "{d}", "--real-train-fraction", "1.5"], "--real-train-fraction"),
    (["eval", "logo", "{d}", "--real-train-fraction", "1"], "--real-train-fraction"),
    (["eval", "generators", "{d}", "--target-fpr", "-0.1"], "--target-fpr"),
    (["eval", "generators", "{d}", "--unsure", "0.6,0.4"], "--unsure"),
    (["detect", "{f}", "--batch-size", "0"], "--batch-size"),
    (["detect", "{f}", "--workers", "-1"], "--workers"),
    (["detect", "{f}", "--url-timeout", "inf"], "--url-timeout"),
    (["detect", "{f}", "--threshold", "nan"], "--threshold"),
    (["data", "fetch-real", "{f}", "--out", "{d}", "--concurrency", "0"], "--concurrency"),
    (["data", "fetch-real", "{f}", "--out", "{d}", "--timeout", "0"], "--timeout"),
    (["data", "fetch-real", "{f}", "--out", "{d}", "--retries", "-1"], "--retries"),
    (["data", "fetch-real", "{f}", "--out", "{d}", "--limit", "x"], "--limit"),
    (["data", "split", "{d}", "--out", "{d}/s", "--val-fraction", "1.2"], "--val-fraction"),
    (["data", "export-wds", "{d}", "--out", "{d}/w", "--samples-per-shard", "0"], "--samples-per-shard"),
    (["data", "build", "--prompts", "{f}", "--out", "{d}/b", "-g", "a=t2i:x/y", "--chunk-size", "0"], "--chunk-size"),
    (["data", "build", "--prompts", "{f}", "--out", "{d}/b", "-g", "nonsense"], "--generator"),
    (["baseline", "train", "frequency", "--real", "{d}", "--fake", "{d}", "--out", "{d}/o", "--lr", "0"], "--lr"),
    (["export", "onnx", "--out", "{d}/m.onnx", "--opset", "3"], "--opset"),
    (["serve", "--port", "0"], "--port"),
    (["serve", "--port", "65536"], "--port"),
    (["serve", "--processes", "0"], "--processes"),
    (["challenges", "worker", "--poll-seconds", "nan"], "--poll-seconds"),
    (["challenges", "worker", "--max-jobs", "0"], "--max-jobs"),
    (["challenges", "create", "{f}", "--host-user", "h", "--threads", "0"], "--threads"),
    (["challenges", "submit", "--challenge", "c", "--phase", "p", "{f}", "--timeout", "-1"], "--timeout"),
    (["train", "--data", "{d}", "--out", "{d}/t", "--steps", "0"], "--steps"),
    (["train", "--data", "{d}", "--out", "{d}/t", "--batch-size", "0"], "--batch-size"),
    (["train", "--data", "{d}", "--out", "{d}/t", "--workers", "0"], "--workers"),
    (["train", "--data", "{d}", "--out", "{d}/t", "--lr", "nan"], "--lr"),
    (["train", "--data", "{d}", "--out", "{d}/t", "--weight-decay", "-1"], "--weight-decay"),
])
def test_bad_numbers_are_usage_errors_at_parse_time(tmp_path, capsys, argv, option):
    f = tmp_path / "file.csv"
    f.write_text("id,label\n")
    argv = [a.format(f=f, d=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"argument {option}" in err[0] and "Traceback" not in err[0], err


def test_the_types_refuse_nan_and_infinity_and_name_the_range():
    for parse in (cliargs.finite_float, cliargs.positive_float, cliargs.probability, cliargs.fraction):
        for bad in ("nan", "inf", "-inf", "abc"):
            with pytest.raises(argparse.ArgumentTypeError):
                parse(bad)
    assert cliargs.probability("0") == 0.0 and cliargs.probability("1") == 1.0
    with pytest.raises(argparse.ArgumentTypeError, match=r"in \(0, 1\)"):
        cliargs.open_fraction("0")
    assert math.isclose(cliargs.open_fraction("0.25"), 0.25)
    assert cliargs.int_range(2, 5)("5") == 5
    with pytest.raises(argparse.ArgumentTypeError, match=r"an integer in \[2, 5\], got '6'"):
        cliargs.int_range(2, 5)("6")
    assert cliargs.probability_band("0.4,0.6") == (0.4, 0.6)


# -- a missing input: the same exit code and message in every command -------------------------------------
MISSING = "{t}/typo/"


@pytest.mark.parametrize("argv", [
    ["detect", MISSING],
    ["embed", MISSING, "--out", "{t}/e.parquet"],
    ["heads", "fit", "--real", MISSING, "--fake", "{t}", "--out", "{t}/h"],
    ["data", "info", MISSING],
    ["data", "info", "typo/"],
    ["data", "fetch-real", MISSING, "--out", "{t}/r"],
    ["data", "export-wds", MISSING, "--out", "{t}/w"],
    ["data", "split", MISSING, "--out", "{t}/s"],
    ["data", "build", "--add-to", MISSING, "-g", "a=t2i:x/y"],
    ["data", "build", "--prompts", "{t}/typo.jsonl", "--out", "{t}/b", "-g", "a=t2i:x/y"],
    ["eval", "generators", MISSING, "--model", "x/y"],
    ["eval", "fpr", MISSING],
    ["eval", "scores", "--labels", MISSING, "--scores", MISSING],
    ["eval", "calibrate", "--labels", MISSING, "--scores", MISSING, "--out", "{t}/c.json"],
    ["baseline", "train", "frequency", "--real", MISSING, "--fake", "{t}", "--out", "{t}/o"],
    ["baseline", "predict", MISSING, "{t}"],
    ["weights", "import-official", MISSING, "--trust-pickles"],
    ["challenges", "create", "{t}/typo.yaml", "--host-user", "h"],
    ["challenges", "submit", "--challenge", "c", "--phase", "p", "{t}/typo.csv"],
    ["challenges", "submit", "--challenge", "c", "--phase", "p", "--model-spec", "{t}/typo.json", "{t}/typo.onnx"],
])
def test_a_missing_input_is_the_same_error_everywhere(tmp_path, capsys, argv):
    argv = [a.format(t=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "typo" in err[0] and "no such file or folder" in err[0], err


def test_the_python_api_raises_the_same_missing_input_error(tmp_path):
    from deepsift.data.reader import read_d3
    from deepsift.exceptions import DataError, InputNotFoundError, UsageError

    with pytest.raises(InputNotFoundError, match="typo: no such file or folder") as exc:
        list(read_d3(tmp_path / "typo"))
    assert isinstance(exc.value, DataError) and isinstance(exc.value, UsageError) and exc.value.exit_code == 2


def test_help_and_version_return_0_and_a_bare_group_2(capsys):
    assert main(["--help"]) == 0 and "Exit codes" in capsys.readouterr().out
    assert main(["data"]) == 2
    assert main(["detect", "--help"]) == 0
    out = capsys.readouterr().out
    assert "(default: 32)" in out and "(default: table)" in out and "P(fake) >=" in out


def test_api_errors_name_options_not_command_line_flags():
    """Errors raised below the CLI speak to Python callers too: no '--flag' in their text."""
    import ast
    from pathlib import Path

    import deepsift

    flag = re.compile(r"(?<![\w-])--[a-z][a-z-]+")
    for path in Path(deepsift.__file__).parent.rglob("*.py"):
        if path.name in ("cli.py", "cliargs.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                text = " ".join(c.value for c in ast.walk(node.exc) if isinstance(c, ast.Constant)
                                and isinstance(c.value, str))
                text = re.sub(r"(deepsift|hf) [a-z][^;:)]*", "", text)  # commands to run may carry their flags
                assert not flag.search(text), f"{path.name}:{node.lineno}: {text}"


def test_eval_really_uses_the_device_option(tmp_path, capsys):
    """--device reaches the detector in eval too (a device this machine lacks is refused, in one line)."""
    import torch

    from evalkit import folders_dataset, tiny_heads, tiny_model

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal below cannot be shown here")
    model = tiny_model(tmp_path / "model")
    heads = tiny_heads(model, folders_dataset(tmp_path / "train", 6, seed=1), tmp_path / "heads")
    test = folders_dataset(tmp_path / "test", 4, seed=2)
    argv = ["eval", "generators", str(test), "--model", str(model), "--heads", str(heads)]
    capsys.readouterr()
    assert main([*argv, "--device", "cuda"]) == 1  # issue 12: a device this machine lacks is an error, exit 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "device 'cuda' is not usable" in err[0]
    assert main([*argv, "--device", "cpu", "--precision", "bf16", "--workers", "1", "--batch-size", "3"]) == 0
