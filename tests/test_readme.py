"""Every shell block of the README marked runnable works as written, against a live server."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.conftest import ROOT
from tests.live import LiveServer

pytestmark = pytest.mark.live


def runnable_blocks() -> list[str]:
    return re.findall(r"```bash runnable\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_the_readme_has_runnable_blocks() -> None:
    assert len(runnable_blocks()) >= 2


@pytest.mark.parametrize("index", range(len(runnable_blocks())))
def test_a_runnable_readme_block_works_against_a_live_server(live: LiveServer, index: int) -> None:
    block = runnable_blocks()[index].replace("localhost:8000", live.url.removeprefix("http://"))
    # Fail on an HTTP error status, and on the first failing command.
    script = "set -euo pipefail\n" + block.replace("curl -s ", "curl -sSf ")
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    answers, rest = [], out.stdout.strip()
    while rest:  # curl writes each answer without a newline after it
        answer, end = json.JSONDecoder().raw_decode(rest)
        answers.append(answer)
        rest = rest[end:].strip()
    assert answers and all(isinstance(a, dict) for a in answers), out.stdout
    print(out.stdout)
