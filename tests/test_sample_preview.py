"""The first graded samples of an eval: shortened and escaped for the log and markdown, written by the
eval program beside its records (and shown while it runs), and logged to the eval's MLflow run as a
table and to its Prefect task run as a markdown artifact (checked on the session's micro run)."""

import json
import re
from pathlib import Path

from sparse2dense.sample_preview import (
    COLUMNS,
    FILE_SAMPLES,
    LOG_SAMPLES,
    MLFLOW_TABLE,
    SAMPLES_FILE,
    SampleLog,
    log_lines,
    preview_rows,
    render_markdown,
    shorten,
)

LONG = "Let me think.\n" + "step | more\n" * 100 + "So the answer is \\boxed{42}."
RECORD = {
    "id": "p1",
    "answer": "42",
    "samples": [
        {
            "text": LONG,
            "pred": "42",
            "verdict": "correct",
            "reason": "symbolic match",
            "finish_reason": "stop",
            "num_tokens": 321,
        },
        {"text": "other", "pred": None, "verdict": "no_answer", "reason": "", "finish_reason": "length"},
    ],
}


def _cells(line: str) -> list[str]:
    """A markdown table row's cells, split at pipes that are not escaped."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def test_shorten_keeps_start_and_end_within_the_limit():
    assert shorten("short", 400) == "short"
    text = shorten(LONG, 400)
    assert len(text) < 430 and text.startswith("Let me think.") and text.endswith("\\boxed{42}.")
    assert f"[{len(LONG) - 266 - 133} chars]" in text


def test_markdown_table_escapes_pipes_newlines_and_tags():
    record = {**RECORD, "samples": [{**RECORD["samples"][0], "text": "<think>a | b\nc</think> 42"}]}
    rows = preview_rows("bench", [record] * 3, {"p1": "What is 6*7?\nExactly."}, n=2)
    markdown = render_markdown(rows)
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 2  # header and the first n samples
    for line in table[1:]:
        cells = _cells(line)
        assert len(cells) == 7, line  # a pipe in the text did not open a column
        assert cells[3] == "&lt;think&gt;a \\| b<br>c&lt;/think&gt; 42"
        assert cells[1] == "What is 6*7?<br>Exactly." and cells[4] == "42"
        assert cells[5] == "correct: symbolic match"
    assert len(render_markdown(rows, per_benchmark=1).splitlines()) == len(markdown.splitlines()) - 1


def test_log_shows_verdict_pred_and_a_short_one_line_completion():
    rows = preview_rows("bench", [RECORD], {"p1": "What is 6*7?"}, n=4)
    lines = log_lines("eval/x", rows)
    assert len(lines) == 4 and "\n" not in "".join(lines)
    assert (
        lines[0] == "[eval/x] bench sample 1/1 (problem p1): correct, pred '42', gold '42' (stop, 321 tokens)"
    )
    completion = lines[2]
    assert completion.startswith("    completion: Let me think. ⏎ step | more ⏎") and "chars]…" in completion
    assert len(completion) < 600 < len(LONG)
    assert completion.endswith("\\boxed{42}.")


def test_sample_log_shows_a_benchmark_once(capsys):
    log = SampleLog("eval/x", "bench", {"p1": "q"}, n=1)
    produce = log.showing(lambda index, shard: [RECORD])
    produce(0, [])
    produce(1, [])
    log.show([RECORD])
    assert capsys.readouterr().out.count("bench sample 1/1") == 1


def _eval_step(micro_run):
    entry = micro_run["stages"]["eval/teacher_base"]
    assert entry["status"] == "computed"
    return entry, Path(entry["path"])


def test_eval_writes_and_logs_its_first_samples(micro_run, micro_workdir):
    from sparse2dense.store import read_manifest

    entry, out = _eval_step(micro_run)
    markdown = (out / SAMPLES_FILE).read_text()
    assert markdown.count("\n| ") == 1 + FILE_SAMPLES and "## toy_test" in markdown
    assert SAMPLES_FILE in read_manifest(out)["files"]  # part of the verified result
    log = micro_workdir / "store" / "_logs" / "eval" / f"{entry['key']}.log"
    lines = log.read_text().splitlines()
    # the first run's lines (a later forced rerun appends its own) up to its only shard being written:
    # the samples are shown as soon as a shard is graded, not once the benchmark is done
    lines = lines[: next(i for i, line in enumerate(lines) if "shard toy_test/00000: written" in line)]
    shown = [line for line in lines if line.startswith("[eval/teacher_base] toy_test sample ")]
    assert len(shown) == LOG_SAMPLES
    first = json.loads((out / "records" / "toy_test.jsonl").read_text().splitlines()[0])
    assert f"(problem {first['id']}): {first['samples'][0]['verdict']}," in shown[0]


def test_eval_run_shows_its_samples_as_an_mlflow_table(micro_run):
    from mlflow.tracking import MlflowClient

    entry, _ = _eval_step(micro_run)
    client = MlflowClient(micro_run["mlflow"]["tracking_uri"])
    run_id = entry["mlflow_run_id"]
    assert {SAMPLES_FILE, MLFLOW_TABLE} <= {a.path for a in client.list_artifacts(run_id)}
    table = json.loads(Path(client.download_artifacts(run_id, MLFLOW_TABLE)).read_text())
    assert table["columns"] == list(COLUMNS) and len(table["data"]) == FILE_SAMPLES
    logged = json.loads(client.get_run(run_id).data.tags["mlflow.loggedArtifacts"])
    assert logged == [{"path": MLFLOW_TABLE, "type": "table"}]  # what the UI shows as a table


def test_eval_task_run_publishes_its_first_samples(micro_run):
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
    )

    from tasks.stages import PREFECT_SAMPLES, samples_artifact_key

    assert samples_artifact_key("eval/teacher_base") == "eval-teacher-base-samples"

    async def fetch():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["eval-teacher-base-samples"])),
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[micro_run["flow_run_id"]])),
            )

    (artifact,) = asyncio.run(fetch())
    assert artifact.type == "markdown" and "## toy_test" in artifact.data
    assert artifact.data.count("\n| ") == 1 + PREFECT_SAMPLES
