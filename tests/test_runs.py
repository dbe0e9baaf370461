"""Run folders: a history of invocations in run.json, failures recorded, embed writes one."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import pytest

from speechssl import __version__, runs
from speechssl.cli import main


@dataclass
class Cfg:
    lr: float = 0.1


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch):
    """Each test is one process's worth of run folders."""
    monkeypatch.setattr(runs, "_started", [])


def _info(run_dir) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def test_a_second_invocation_appends_to_the_history(tmp_path, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["speechssl", "pretrain", "--out", str(run)])
    runs.start_run(run, "pretrain", Cfg(), seed=3)
    monkeypatch.setattr(sys, "argv", ["speechssl", "pretrain", "--out", str(run), "--resume"])
    runs.start_run(run, "pretrain", Cfg(lr=0.2), seed=3)
    info = _info(run)
    first, second = info["invocations"]
    assert first["command"][-1] == str(run) and second["command"][-1] == "--resume"
    assert all(i["speechssl_version"] == __version__ and i["started"] for i in (first, second))
    # the latest invocation's fields stay at the top, as readers of older run.json expect
    assert info["command"] == second["command"] and info["seed"] == 3
    assert runs.read_history(run) == [first, second]


def test_a_run_json_without_history_becomes_its_first_entry(tmp_path):
    run = tmp_path / "old"
    run.mkdir()
    old = {"job": "probe", "seed": 0, "command": ["speechssl", "probe"], "started": "then"}
    (run / "run.json").write_text(json.dumps(old))
    runs.start_run(run, "probe", Cfg())
    history = _info(run)["invocations"]
    assert history[0] == old and len(history) == 2 and history[1]["outcome"] == runs.RUNNING


def test_record_failure_keeps_the_error_line_and_exit_code(tmp_path):
    current = tmp_path / "b"
    runs.start_run(current, "probe", Cfg())
    runs.record_failure("the manifest is empty: x.jsonl.gz", 2)
    last = _info(current)["invocations"][-1]
    assert (last["outcome"], last["exit_code"]) == ("failed", 2)
    assert last["error"] == "the manifest is empty: x.jsonl.gz" and last["finished"]
    assert "failed with exit code 2: the manifest is empty" in (current / "log.txt").read_text()
    runs.record_failure("again", 3)  # already closed: the first record stays
    assert _info(current)["exit_code"] == 2


def test_no_run_folder_yet_records_nothing(tmp_path):
    runs.record_failure("bad option", 2)  # must not raise
    assert list(tmp_path.iterdir()) == []


def test_open_runs_are_closed_at_exit(tmp_path, monkeypatch):
    command, ok, crashed = tmp_path / "demo", tmp_path / "demo" / "ok", tmp_path / "demo" / "x"
    for run in (command, ok, crashed):
        runs.start_run(run, "stage", Cfg())
    monkeypatch.setattr(sys, "last_value", RuntimeError("CUDA out of memory\nmore"), raising=False)
    runs._close_at_exit()
    assert (_info(ok)["outcome"], _info(ok)["exit_code"]) == ("ok", 0)
    for run in (command, crashed):
        crash = _info(run)
        assert (crash["outcome"], crash["exit_code"]) == ("failed", 1)
        assert crash["error"] == "RuntimeError: CUDA out of memory"


def test_a_clean_exit_closes_open_runs_as_ok(tmp_path, monkeypatch):
    monkeypatch.delattr(sys, "last_value", raising=False)
    runs.start_run(tmp_path / "r", "embed", Cfg())
    runs._close_at_exit()
    assert (_info(tmp_path / "r")["outcome"], _info(tmp_path / "r")["exit_code"]) == ("ok", 0)


def test_failed_embed_command_leaves_a_run_folder_that_says_why(tmp_path, capsys):
    out = tmp_path / "emb" / "test.npz"
    cuts = tmp_path / "cuts.jsonl.gz"
    code = main(["embed", "--upstream", str(tmp_path / "nope"), "--cuts", str(cuts), "--out",
                 str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "nope" in err
    run = tmp_path / "emb" / "test.run"
    assert (run / "config.yaml").is_file()
    info = _info(run)
    assert info["job"] == "embed" and info["outcome"] == "failed" and info["exit_code"] == 2
    assert "nope" in info["error"] and info["error"] in err
    assert "failed with exit code 2" in (run / "log.txt").read_text()


def test_embed_writes_its_run_folder_beside_the_output(tmp_path):
    from speechssl.errors import UserError
    from speechssl.recipes.embed import EmbedConfig, run_embed

    out = tmp_path / "emb" / "dev.npz"
    with pytest.raises(UserError):
        run_embed(EmbedConfig(upstream=str(tmp_path / "nope"), cuts=tmp_path / "c", out=out))
    run = tmp_path / "emb" / "dev.run"
    assert _info(run)["job"] == "embed" and (run / "config.yaml").is_file()
    assert "embed started" in (run / "log.txt").read_text()


def test_a_failing_stage_fails_the_command_that_started_it_too(tmp_path):
    demo, done, stage = tmp_path / "demo", tmp_path / "demo" / "kmeans", tmp_path / "demo" / "p"
    for run in (demo, done, stage):
        runs.start_run(run, "x", Cfg())
    runs.record_failure("boom", 2)
    assert [_info(r)["outcome"] for r in (demo, done, stage)] == ["failed", "running", "failed"]
    assert "exit code 2: boom" in (demo / "log.txt").read_text()
    runs._close_at_exit()
    assert _info(done)["outcome"] == "ok"


def test_only_rank_zero_keeps_the_history(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    runs.start_run(tmp_path / "r", "pretrain", Cfg())
    assert not (tmp_path / "r" / "run.json").exists()
    monkeypatch.setenv("RANK", "0")
    runs.start_run(tmp_path / "r", "pretrain", Cfg())
    assert len(_info(tmp_path / "r")["invocations"]) == 1


def test_an_interrupted_command_is_recorded_as_such(tmp_path, monkeypatch, capsys):
    import speechssl.models.registry as registry

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(registry, "load_upstream", interrupt)
    out = tmp_path / "e.npz"
    assert main(["embed", "--upstream", "x", "--cuts", "c", "--out", str(out)]) == 130
    info = _info(tmp_path / "e.run")
    assert (info["outcome"], info["error"], info["exit_code"]) == ("failed", "interrupted", 130)
