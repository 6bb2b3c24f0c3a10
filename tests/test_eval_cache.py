"""The benchmarks' shared evaluation cache: several processes append to one file."""

import json
import multiprocessing as mp
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.controllers import EvalCache  # noqa: E402


def _writer(path: str, tag: str, n: int) -> None:
    cache = EvalCache(Path(path))
    for i in range(n):
        cache.put(f"{tag}{i}", {"accuracy": i / n, "arch": f"{tag}-{i}" * 20})


def test_processes_share_one_cache(tmp_path):
    path = tmp_path / "eval_cache.jsonl"
    reader = EvalCache(path)  # opened before anything was written
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), tag, 200)) for tag in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    # a miss reads what the other processes appended since
    assert reader.get("a199") == {"accuracy": 199 / 200, "arch": "a-199" * 20}
    assert len(reader.data) == 400
    assert len(path.read_text().splitlines()) == 400  # no interleaved or lost lines


def test_torn_line_and_legacy_json(tmp_path):
    legacy = tmp_path / "eval_cache.json"
    legacy.write_text(json.dumps({"old": {"accuracy": 0.5}}))
    cache = EvalCache(legacy)
    cache.put("k1", {"accuracy": 0.9})
    with open(cache.path, "ab") as fh:  # a writer killed mid-line
        fh.write(b'{"key": "k2", "accur')
    cache.put("k3", {"accuracy": 0.7})
    again = EvalCache(tmp_path / "eval_cache.jsonl")
    assert again.get("old") == {"accuracy": 0.5}
    assert again.get("k1") == {"accuracy": 0.9} and again.get("k3") == {"accuracy": 0.7}
    assert again.get("k2") is None
