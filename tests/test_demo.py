"""The demo end to end on a tiny corpus: every stage is reported, and the numbers in the report
are the ones its stages wrote (probe results, metrics, selection)."""

import json
import re
from collections import defaultdict

from speechssl.cli import main
from speechssl.data.manifest import load_cuts
from speechssl.training import read_metrics

STAGES = [
    "## 1. Corpus",
    "## 1b. Choosing pseudo-labels without training",
    "## 2. MT4SSL pretraining",
    "## 3. Probes",
    "## 4. DINO and speaker verification on held-out voices",
    "## 5. UnFuSeD: a teacher's clusters distilled into a small student",
]


def _table_rows(report: str, first_cell: str) -> list[str]:
    """The cells after the first of the Markdown row starting with ``first_cell``."""
    row = re.search(rf"^\| {re.escape(first_cell)} \|(.*)\|$", report, re.M)
    assert row, first_cell
    return [v.strip() for v in row.group(1).split("|")]


def test_demo_reports_every_stage_with_the_numbers_its_stages_wrote(tmp_path, capsys):
    out, cache = tmp_path / "demo", tmp_path / "cache"
    argv = ["demo", "--out", str(out), "--minutes", "1", "--cache-dir", str(cache),
            "--pretrain-steps", "4", "--probe-epochs", "3", "--dino-steps", "2", "--unfused-epochs", "1"]  # fmt: skip
    assert main(argv) == 0
    report = (out / "report.md").read_text()
    # off a terminal, each stage still announces itself as it starts (was: silence), on
    # stderr and in the demo's own log.txt; training prints its step lines
    err, log = capsys.readouterr().err, (out / "log.txt").read_text()
    for text in (err, log):
        at = [text.find(f"demo stage {n}/5: ") for n in ("1", "1b", "2", "3", "4", "5")]
        assert -1 not in at and at == sorted(at), at
    assert "train: 4/4 steps, loss" in err and "demo: report written to" in err
    at = [report.find(s) for s in STAGES]
    assert -1 not in at and at == sorted(at), at  # every stage, in order
    for rel in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report):
        assert (out / rel).read_bytes()[:4] == b"\x89PNG"

    # 1: the corpus table counts the cached corpus' utterances, voice by voice, with the
    # languages each voice speaks; minutes per language are summed over the cuts
    cuts = load_cuts(cache / "synth-v2-1min-seed0" / "cuts.jsonl.gz")
    voices = re.findall(r"^\| (\S+) \| (\S+) \| (\S+) \| (\d+) \| [\d.]+ \|$", report, re.M)
    assert len(voices) == 20 and sum(int(v[3]) for v in voices) == len(cuts)
    spoken = defaultdict(set)
    seconds = defaultdict(float)
    for c in cuts:
        sup = c.supervisions[0]
        spoken[sup.speaker].add(sup.language)
        seconds[sup.language] += c.duration
    assert {v[0]: v[1] for v in voices} == {k: ",".join(sorted(v)) for k, v in spoken.items()}
    assert any("," in v[1] for v in voices)  # voices speak several languages, not one each
    per_lang = dict(re.findall(r"^\| ([a-z]{2}) \| ([\d.]+) \|$", report, re.M))
    assert per_lang == {k: f"{v / 60:.2f}" for k, v in seconds.items()}
    assert sorted(per_lang) == ["de", "en", "es", "fr"]
    assert f"{len(cuts)} utterances" in report and "20 voices in 4 languages" in report

    # 1b: "best three" are the first scored names of each selection.json
    for label in ("speaker", "language"):
        if not (out / f"select-{label}" / "selection.json").is_file():  # classes too small
            assert f"**{label}**: not scored, no '{label}' class has" in report
            continue
        sel = json.loads((out / f"select-{label}" / "selection.json").read_text())
        scored = [r["name"] for r in sel["ranking"] if r["utility"] is not None]
        best = ", ".join(scored[:3]) or "none (classes too small"
        assert f"**{label}** ({sel['counts']['items']} utterances" in report
        assert f"best three {best}" in report

    # 2: the final loss and the live indicators' share are those of metrics.jsonl
    records = read_metrics(out / "pretrain" / "metrics.jsonl")
    last = [r for r in records if "loss" in r][-1]
    assert last["step"] == 4 and f"Final loss {last['loss']:.3f}" in report
    live = [r for r in records if "monitor_seconds" in r]
    assert any(k.endswith("/rankme") for k in live[-1])
    assert f"for {100 * live[-1]['monitor_share']:.1f}% of the training time" in report

    # 3: each probe cell is the test accuracy in that probe's results.json
    for upstream in ("fbank", "mfcc", "tiny", "mt4ssl-tiny"):
        cells = _table_rows(report, upstream)
        for cell, task in zip(cells, ("synth-speaker", "synth-language", "synth-phoneme"),
                              strict=True):  # fmt: skip
            result = json.loads(
                (out / "probes" / f"{upstream}-{task}" / "results.json").read_text()
            )
            summary = result["summary"]
            metric = "frame_accuracy" if "frame_accuracy" in summary else "accuracy"
            assert cell == f"{100 * summary[metric]['mean']:.1f}", (upstream, task)

    # 4: DINO ran its steps and logged the collapse monitors
    dino = [r for r in read_metrics(out / "dino" / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in dino][-1] == 2
    assert {"teacher_entropy", "student_entropy", "embedding_std"} <= set(dino[-1])
    assert "DINO teacher" in report or "too few utterances per held-out voice" in report

    # 5: UnFuSeD from the DINO teacher; the cluster sizes sum to the clustered (training)
    # utterances, k = min(16, train // 3), NMI/purity and accuracies are those of results.json
    res = json.loads((out / "unfused" / "results.json").read_text())
    cl, ft = res["clusters"], res["finetune"]
    assert res["teacher"]["upstream"] == str(out / "dino")
    sizes = [
        int(x)
        for x in re.search(r"Cluster sizes: ([\d, ]+) \(sum (\d+)\)", report).group(1).split(", ")
    ]
    assert sizes == cl["sizes"] and sum(sizes) == cl["utterances"] == ft["split_sizes"]["train"]
    assert len(sizes) == min(16, ft["split_sizes"]["train"] // 3)
    assert f"NMI {cl['agreement']['nmi']:.3f}, purity {cl['agreement']['purity']:.3f}" in report
    scratch = json.loads((out / "unfused-scratch" / "finetune" / "results.json").read_text())
    assert scratch["steps"] == ft["steps"]
    for name, r in (("UnFuSeD: distilled, then fine-tuned", ft),
                    ("random init, fine-tuned alike", scratch)):  # fmt: skip
        cells = _table_rows(report, name)
        assert cells[-1] == f"{100 * r['test_accuracy']:.1f}"
        assert 0 <= float(cells[-1]) <= 100

    # a second run reuses the cached corpus and, with the stages off, reports only the corpus
    again = tmp_path / "again"
    assert main([*argv[:-8], "--pretrain-steps", "0", "--probe-epochs", "3", "--dino-steps", "0",
                 "--unfused-epochs", "0", "--no-select", "--out", str(again)]) == 0  # fmt: skip
    second = (again / "report.md").read_text()
    assert "Loaded from cache" in second and "Synthesised" in report
    assert "## 2. MT4SSL" not in second and "## 4. DINO" not in second
    assert "## 5. UnFuSeD" not in second
    assert _table_rows(second, "fbank") == _table_rows(report, "fbank")  # same seed, same probe
