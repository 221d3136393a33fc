"""One CLI: global options anywhere, every default in the help, light commands without torch."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

import pytest

from robustrec.cli import COMMANDS, SUMMARIES, build_parser, command_parser, main
from tests.test_cli import one_line_error

#: The smallest valid arguments of commands whose parsers have required options.
MINIMAL = {
    "train": ["--model", "vbpr", "--out", "x"],
    "report": ["results"],
    "check": ["results"],
    "evaluate": ["run"],
    "compare": ["run"],
    "list": [],
    "ingest": ["--out", "x"],
    "audit": ["run", "--suite", "noise", "--out", "x"],
    "diagnose": ["run", "--out", "x"],
    "demo": ["--out", "x"],
    "study": ["list"],
}


def test_every_command_is_covered():
    assert set(MINIMAL) == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(MINIMAL))
@pytest.mark.parametrize("where", ["before", "after"])
def test_global_options_before_or_after_the_command(command, where):
    def parse(*options):
        argv = [*options, command, *MINIMAL[command]] if where == "before" else [command, *MINIMAL[command], *options]
        return build_parser().parse_args(argv)

    plain = parse()
    assert plain.threads is None and plain.no_progress is False
    assert parse("--threads", "3").threads == 3
    assert parse("--no-progress").no_progress is True
    assert parse("--quiet").no_progress is True


def test_an_option_given_before_the_command_is_not_reset_by_the_command():
    """argparse copies a sub-command's defaults over what the main parser read: --no-progress before
    ``train`` was silently lost."""
    args = build_parser().parse_args(["--no-progress", "--threads", "2", "train", *MINIMAL["train"]])
    assert (args.no_progress, args.threads) == (True, 2)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_the_global_options(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert "--threads" in text and re.search(r"--no-progress, --quiet|--quiet, --no-progress", text), text


def option_blocks(help_text: str) -> dict[str, str]:
    """``--flag`` -> the help text printed for it (the option line and its continuation lines)."""
    blocks: dict[str, str] = {}
    current = None
    for line in help_text.splitlines():
        match = re.match(r"\s{2}(-{1,2}[\w-]+)", line)
        if match:
            current = match.group(1)
            blocks[current] = line
        elif current and line.startswith(" " * 6):
            blocks[current] += " " + line.strip()
        else:
            current = None
    return blocks


def meaningful_default(action: argparse.Action) -> bool:
    """An option whose default says something (0 and 0.0 do; None, an off switch or [] do not)."""
    default = action.default
    return (bool(action.option_strings) and action.help is not argparse.SUPPRESS
            and not any(default is nothing for nothing in (None, False, argparse.SUPPRESS))
            and default not in ([], ()) and not isinstance(action, argparse._HelpAction))


@pytest.mark.parametrize("command", COMMANDS)
def test_every_flag_with_a_default_shows_it(command):
    parser = command_parser(command)
    blocks = option_blocks(parser.format_help())
    checked = 0
    for action in parser._actions:
        if meaningful_default(action):
            text = blocks[action.option_strings[0]]
            assert "default" in text, f"{command} {action.option_strings[0]}: {text}"
            checked += 1
    if command in ("train", "ingest", "check"):
        assert checked >= 2  # the test can fail: these commands have several such flags


def test_the_default_is_shown_as_typed():
    blocks = option_blocks(command_parser("train").format_help())
    assert "(default: 5,10,20)" in blocks["--topk"] and "(default: 0.001)" in blocks["--lr"]
    assert "(default: adam)" in blocks["--optimizer"] and "(default: 0.2)" in blocks["--alpha2"]


@pytest.mark.parametrize("command", COMMANDS)
def test_the_summary_table_matches_each_command(command, capsys):
    """``robustrec --help`` lists the commands from a table, without importing their modules."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    listed = capsys.readouterr().out
    assert f"{command}" in listed and SUMMARIES[command] in " ".join(listed.split())
    sub = build_parser()._subparsers._group_actions[0]
    helps = {choice.dest: choice.help for choice in sub._choices_actions}
    assert helps[command] == SUMMARIES[command]


def test_seed_with_seeds_is_an_error(tmp_path, capsys):
    one_line_error(capsys, ["train", "--model", "pop", "--seed", "1", "--seeds", "1,2", "--out", str(tmp_path / "r")],
                   "--seed and --seeds")
    assert not (tmp_path / "r").exists()


def torch_imported(argv: list[str]) -> tuple[bool, int]:
    """Run ``robustrec argv`` in a fresh interpreter; whether it imported torch, and its exit status."""
    code = ("import sys\nfrom robustrec.cli import main\n"
            f"try:\n    status = main({argv!r})\nexcept SystemExit as exc:\n    status = exc.code\n"
            "print('torch' in sys.modules, status, file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    imported, status = out.stderr.strip().splitlines()[-1].split()
    return imported == "True", int(status)


@pytest.mark.parametrize("argv, status", [
    (["--help"], 0), (["check", "--help"], 0), (["check", "{records}", "--max-drop", "50%"], 0),
    (["report", "{records}"], 0), (["compare", "{records}/none"], 2), (["--threads", "2", "list", "--help"], 0),
])
def test_light_commands_do_not_import_torch(tmp_path, argv, status):
    """Importing torch takes about 1.5 s: ``robustrec --help`` took 1.8 s, ``check`` 1.5 s."""
    from robustrec.records import write_records
    from tests.reports.conftest import make_audit

    write_records(tmp_path / "a.jsonl", make_audit())
    assert torch_imported([word.format(records=tmp_path) for word in argv]) == (False, status)


@pytest.mark.slow  # a fresh interpreter imports torch: about 2 s
def test_the_check_is_able_to_see_torch(tmp_path):
    """The wrapper does see torch when a command imports it (so the tests above can fail)."""
    assert torch_imported(["evaluate", str(tmp_path)]) == (True, 2)


def test_list_json_is_from_the_registries(capsys, monkeypatch):
    from robustrec.models import MODELS

    class Toy:
        def __init__(self, dataset, *, width: int = 7, mode: str = "fast") -> None: ...

    monkeypatch.setitem(MODELS._factories, "toy", Toy)
    assert main(["list", "models", "--json"]) == 0
    listed = {entry["name"]: entry for entry in json.loads(capsys.readouterr().out)["models"]}
    assert listed["toy"]["params"] == {"width": {"type": "int", "default": 7}, "mode": {"type": "str", "default": "fast"}}
    assert "dataset" not in listed["vbpr"]["params"] and listed["vbpr"]["params"]


def test_list_shows_each_kind_with_defaults(capsys):
    for kind, name, param in [("models", "freedom", "knn_k=10"), ("strategies", "mirror", "alpha2=0.2"),
                              ("suites", "noise", ""), ("captioners", "imagenet", ""), ("metrics", "recall", "")]:
        assert main(["list", kind]) == 0
        out = capsys.readouterr().out
        assert re.search(rf"^{name}\b", out, re.M), out
        assert param in out
    assert main(["list", "metrics"]) == 0
    out = capsys.readouterr().out
    assert "recall@20" in out and "5,10,20" in out
    assert main(["list"]) == 0
    everything = capsys.readouterr().out
    assert all(kind in everything for kind in ("models", "strategies", "suites", "captioners", "metrics"))
