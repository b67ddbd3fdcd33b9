"""Log lines as text or JSON (filedrop.logs): what the CLI, the operator and its inline loads write."""

from __future__ import annotations

import json
import subprocess
import sys

SNIPPET = "import logging, sys; from filedrop import logs; logs.configure({verbose}, {as_json}); " \
          "logging.getLogger('filedrop.x').info('loaded %s', 'a.csv'); logging.getLogger('y').warning('w')"


def run(verbose: bool, as_json: bool) -> list[str]:
    res = subprocess.run([sys.executable, "-c", SNIPPET.format(verbose=verbose, as_json=as_json)],
                         capture_output=True, text=True, check=True)
    return res.stderr.splitlines()


def test_json_lines_carry_time_level_logger_and_message() -> None:
    first, second = (json.loads(line) for line in run(True, True))
    assert (first["level"], first["logger"], first["message"]) == ("INFO", "filedrop.x", "loaded a.csv")
    assert first["time"] and second["level"] == "WARNING"


def test_text_lines_and_warnings_only_unless_verbose() -> None:
    [line] = run(False, False)
    assert line.endswith("WARNING y: w")
    assert len(run(True, False)) == 2
