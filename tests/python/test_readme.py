"""The README's examples, run as written: every Python and shell block marked with a
`<!-- test: serve ARGS -->` comment runs against a fresh `ecsd serve ARGS` (the address swapped
for the test server's), must succeed, and must print what its `# comments` say it prints."""

import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from conftest import Ecsd, cli_env

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
MARKER = re.compile(r"<!-- test: serve(?P<args>[^>]*)-->\s*\n```(?P<lang>python|sh)\n(?P<code>.*?)```", re.S)
README_URL = "http://127.0.0.1:8080"


def examples():
    text = README.read_text()
    found = [
        pytest.param(m["lang"], shlex.split(m["args"]), m["code"], id=f"line{text[:m.start()].count(chr(10)) + 1}")
        for m in MARKER.finditer(text)
    ]
    assert len(found) >= 3, "the README's examples are marked for testing"
    return found


def expected_output(code):
    """What the block's print lines say they print: the first word of each `# comment`."""
    return [m.group(1) for m in re.finditer(r"print\(.*#\s*(\S+)", code)]


@pytest.mark.parametrize("lang,args,code", examples())
def test_readme_example_works_as_pasted(tmp_path, lang, args, code):
    server = Ecsd(tmp_path / "data", extra_args=args).start()
    try:
        code = code.replace(README_URL, server.url)
        env = cli_env()
        env["PATH"] = os.path.dirname(os.environ.get("AWS_CLI", "aws")) + os.pathsep + env["PATH"]
        command = [sys.executable, "-c", code] if lang == "python" else ["bash", "-euo", "pipefail", "-c", code]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
        for word in expected_output(code):
            assert word in done.stdout, f"expected {word!r} in:\n{done.stdout}"
    finally:
        server.stop()
