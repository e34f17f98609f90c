"""The command line and its client stand on their own: importing them loads neither moto nor the local stack.

A user of a deployed stack runs `batchline submit` and `batchline status`; moto, the emulator and
the in-process handlers come in only with the `local` commands (and `--sample-emulator`).
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import batchline_cli


def test_importing_every_module_of_the_cli_loads_no_moto_and_no_local_stack() -> None:
    modules = sorted(f"batchline_cli.{module.name}" for module in pkgutil.iter_modules(batchline_cli.__path__))
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in ('moto', 'batchline_local')}))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)

    assert "batchline_cli.cli" in modules
    assert run.stdout.strip() == "[]"


def test_the_help_of_every_command_loads_no_moto() -> None:
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from batchline_cli.cli import app\n"
        "for args in (['--help'], ['local', '--help'], ['submit', '--help'], ['local', 'run', '--help']):\n"
        "    assert CliRunner().invoke(app, args).exit_code == 0, args\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in ('moto', 'batchline_local')}))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)

    assert run.stdout.strip() == "[]"
