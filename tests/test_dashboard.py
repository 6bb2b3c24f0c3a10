"""optuna-dashboard as a real client: started on a finished search's journal file, it serves the trials over HTTP."""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from nas.search import SearchConfig, run_search
from search_space import count_madds

DASHBOARD = shutil.which("optuna-dashboard") or str(Path(sys.executable).with_name("optuna-dashboard"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


@pytest.mark.skipif(not Path(DASHBOARD).exists(), reason="optuna-dashboard not installed (pip install -e '.[dashboard]')")
def test_dashboard_reads_a_finished_search(tmp_path):
    out = tmp_path / "search"
    run_search(SearchConfig(space="small", controller="random", trials=5, out=out, target_ms=5.0, progress=False,
                            plots=False, zoo_reference=()),
               evaluate_accuracy=lambda s: 0.7 + 0.2 * math.tanh(count_madds(s) / 3e6),
               latency_fn=lambda s: count_madds(s) / 1e7)
    port = _free_port()
    proc = subprocess.Popen([DASHBOARD, str(out / "study.log"), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        studies = None
        while time.monotonic() < deadline:
            try:
                studies = _get(f"http://127.0.0.1:{port}/api/studies")
                break
            except OSError:
                time.sleep(0.3)
        assert studies is not None, "the dashboard never answered"
        (summary,) = studies["study_summaries"]
        assert summary["study_name"] == "nas-search"
        detail = _get(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}?after=0")
        trials = detail["trials"]
        assert len(trials) == 5 and all(t["state"] == "Complete" for t in trials)
        assert all(t["values"] and 0 < t["values"][0] < 1 for t in trials)
        attrs = {a["key"] for a in trials[0]["user_attrs"]}
        assert {"accuracy", "latency_ms", "arch"} <= attrs
    finally:
        proc.terminate()
        proc.wait(timeout=10)
