"""The UI path end to end in headless Chromium: `s2d up`, `s2d serve`, a toy post-train run started
from the deployment's form in the Prefect UI (which shows each field's description), its flow run
page and its MLflow run page; the sweep's nightly schedule (paused) and its parameter form.

Needs Debian's Chromium at /usr/bin/chromium and the `playwright` package (its Python driver only;
no browser is downloaded). Run with `make test-ui` or `pytest -m ui`. Screenshots go to
`$S2D_UI_SCREENSHOTS` (default: the test's tmp directory).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sparse2dense.config import load_config
from sparse2dense.pipeline import plan_stages
from sparse2dense.sections import BaseSection
from tests.conftest import MICRO, ROOT, TOY

pytestmark = pytest.mark.ui

CHROMIUM = Path("/usr/bin/chromium")
# Headless on a machine with no screen and a closed network: no sandbox as root, no GPU, and none of
# Chromium's background connections.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEPLOYMENTS = {"post-train/post-train", "ablation-sweep/ablation-sweep", "evaluate/evaluate"}
RUN_TIMEOUT_S = 15 * 60
UI_TIMEOUT_MS = 60_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _s2d(*args: str, env: dict[str, str], timeout: float = 300) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"s2d {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _stop(proc: subprocess.Popen) -> None:
    """Stop `s2d serve` (SIGTERM: Prefect's runner shuts down gracefully while the server is still
    up), then whatever is left of its process group (the flow runs it started)."""
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _screenshot(page, path: Path) -> Path:
    page.screenshot(path=str(path), animations="disabled")
    assert path.is_file() and path.stat().st_size > 10_000, f"{path} is missing or blank"
    return path


def _form_field(page, label: str):
    """The input of a property in Prefect's parameter form, found by its label."""
    return (
        page.get_by_text(label, exact=True)
        .first.locator("xpath=ancestor::div[contains(concat(' ', @class, ' '), ' p-label ')][1]")
        .locator("input, textarea")
        .first
    )


@pytest.fixture
def screenshots(tmp_path) -> Path:
    out = Path(os.environ.get("S2D_UI_SCREENSHOTS") or tmp_path / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture
def stack(tmp_path):
    """`s2d up` on free ports, `s2d serve` of a micro toy config; everything stopped afterwards."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

    cfg = load_config(TOY, [*MICRO, f"store_dir={tmp_path / 'store'}", f"runs_dir={tmp_path / 'runs'}"])
    config_path = tmp_path / "micro.yaml"
    config_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    runs = tmp_path / "runs"
    prefect_port, mlflow_port = _free_port(), _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    env.pop("PREFECT_API_URL", None)
    service_args = ["--runs-dir", str(runs), "--prefect-port", str(prefect_port)]
    service_args += ["--mlflow-port", str(mlflow_port)]
    serve = None
    try:
        _s2d("up", *service_args, env=env)
        api = f"http://127.0.0.1:{prefect_port}/api"
        serve_log = open(tmp_path / "serve.log", "w")  # noqa: SIM115  (closed below)
        serve = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "serve", "--config", str(config_path)],
            cwd=ROOT,
            env=env | {"PREFECT_API_URL": api, "PREFECT_HOME": str(tmp_path / "prefect-home")},
            stdout=serve_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait_for_deployments(api, serve, tmp_path / "serve.log")
        yield {
            "api": api,
            "prefect_ui": f"http://127.0.0.1:{prefect_port}",
            "mlflow_ui": f"http://127.0.0.1:{mlflow_port}",
            "tracking_uri": f"sqlite:///{runs}/mlflow.db",
            "store_dir": str(tmp_path / "store"),
            "num_stages": len(plan_stages(cfg)),
            "serve_log": tmp_path / "serve.log",
        }
    finally:
        if serve is not None:
            _stop(serve)
            serve_log.close()
        _s2d("down", *service_args, env=env, timeout=120)


def _client(api: str):
    """A synchronous Prefect client for the `s2d up` server (this process's settings left alone)."""
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(api)


def _wait_for_deployments(api: str, serve: subprocess.Popen, log: Path, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    with _client(api) as client:
        while time.monotonic() < deadline:
            assert serve.poll() is None, f"s2d serve exited:\n{log.read_text()[-3000:]}"
            flows = {f.id: f.name for f in client.read_flows()}
            names = {f"{flows.get(d.flow_id)}/{d.name}" for d in client.read_deployments()}
            if names >= DEPLOYMENTS:
                return
            time.sleep(2)
    raise AssertionError(f"deployments not registered after {timeout_s:.0f}s:\n{log.read_text()[-3000:]}")


def _wait_for_flow_run(api: str, flow_run_id: str, log: Path, timeout_s: float = RUN_TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    with _client(api) as client:
        while time.monotonic() < deadline:
            state = client.read_flow_run(flow_run_id).state
            if state is not None and state.is_final():
                assert state.is_completed(), f"flow run ended {state.name}:\n{log.read_text()[-5000:]}"
                return state
            time.sleep(5)
    raise AssertionError(f"flow run not finished after {timeout_s:.0f}s:\n{log.read_text()[-5000:]}")


def _mlflow_parent_run(tracking_uri: str, flow_run_id: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, filter_string=f"tags.`prefect.flow_run_id` = '{flow_run_id}'")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, f"expected one MLflow parent run for flow run {flow_run_id}, got {runs}"
    return parents[0]


def _assert_student_registered(tracking_uri: str, flow_run_id: str) -> None:
    from mlflow.tracking import MlflowClient

    versions = MlflowClient(tracking_uri).search_model_versions("name = 'toy-student'")
    assert [v.tags["prefect.flow_run_id"] for v in versions] == [flow_run_id]


def _submit(page, attempts: int = 2):
    """Click the form's Submit; the response that created the flow run. Once, on a loaded machine, a
    request of the form failed (the UI's "Something went wrong" toast, shown for a 5xx answer or a
    network error) and no run was created: the click is repeated once, and what failed is printed."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(1, attempts + 1):
        try:
            with page.expect_response(lambda r: r.url.endswith("/create_flow_run")) as created:
                page.get_by_role("button", name="Submit", exact=True).click()
        except PlaywrightTimeout:
            print(f"submit {attempt}: the form sent no create_flow_run request")
            continue
        if created.value.ok:
            return created.value
        print(f"submit {attempt}: create_flow_run answered {created.value.status}: {created.value.text()}")
    raise AssertionError(f"the run form did not create a flow run in {attempts} attempts (see stdout)")


def _start_post_train_from_form(page, stack: dict, run_name: str, screenshots: Path) -> tuple[str, Path]:
    """Deployments page -> post-train -> Run -> Custom run -> submit; the flow run id, and a
    screenshot of the form showing a field's description."""
    page.goto(f"{stack['prefect_ui']}/deployments", wait_until="networkidle")
    page.get_by_role("link", name="post-train", exact=True).first.click()
    page.wait_for_url(re.compile(r"/deployments/deployment/[0-9a-f-]+"))
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run", exact=True).click()
    page.wait_for_url(re.compile(r"/deployments/deployment/[0-9a-f-]+/run"))
    # The form is generated from the typed PipelineConfig and prefilled from `s2d serve --config`.
    for label in (
        "config",
        "Teacher Steps (Optional)",
        "Num Generations (Optional)",
        "force_rerun (Optional)",
    ):
        page.get_by_text(label, exact=True).first.wait_for()
    assert _form_field(page, "Store Dir (Optional)").input_value() == stack["store_dir"]
    # Each field's description (the schema's help text) is shown with it.
    description = page.get_by_text(BaseSection.model_fields["teacher_steps"].description, exact=True).first
    description.wait_for()
    description.scroll_into_view_if_needed()
    shot = _screenshot(page, screenshots / "post-train-form.png")
    # The prefilled values stay; only the flow run's name (not part of the config) is set.
    _form_field(page, "Run Name").fill(run_name)
    created = _submit(page)
    page.get_by_text(f"{run_name} scheduled to start now").first.wait_for()  # the UI's toast
    flow_run_id = created.json()["id"]
    page.goto(f"{stack['prefect_ui']}/runs/flow-run/{flow_run_id}", wait_until="networkidle")
    page.get_by_text(run_name, exact=True).first.wait_for()
    return flow_run_id, shot


def _check_sweep_deployment(page, stack: dict, screenshots: Path) -> list[Path]:
    """The example schedule (02:00 UTC, created paused) and the sweep's parameter form."""
    page.goto(f"{stack['prefect_ui']}/deployments", wait_until="networkidle")
    page.get_by_role("link", name="ablation-sweep", exact=True).first.click()
    page.wait_for_url(re.compile(r"/deployments/deployment/[0-9a-f-]+"))
    schedule = page.get_by_text("At 02:00 AM every day", exact=True).first
    schedule.wait_for()
    card = schedule.locator("xpath=ancestor::*[.//*[@role='switch']][1]")
    assert card.get_by_role("switch").get_attribute("aria-checked") == "false"
    card.get_by_role("button").last.click()  # the schedule's menu
    page.get_by_text("Edit", exact=True).click()
    page.get_by_text("Edit schedule", exact=True).wait_for()
    cron_inputs = page.locator("input[type=text]")
    page.wait_for_function("() => [...document.querySelectorAll('input')].some(i => i.value === '0 2 * * *')")
    assert "0 2 * * *" in [i.input_value() for i in cron_inputs.all()]
    page.get_by_text("UTC", exact=True).first.wait_for()
    shots = [_screenshot(page, screenshots / "ablation-sweep-schedule.png")]
    page.get_by_role("button", name="Close", exact=True).click()  # nothing is saved

    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run", exact=True).click()
    page.wait_for_url(re.compile(r"/deployments/deployment/[0-9a-f-]+/run"))
    for label in ("sweep", "Base", "Teacher Steps (Optional)", "Arms", "Reference (Optional)"):
        page.get_by_text(label, exact=True).first.wait_for()
    assert _form_field(page, "Name").input_value() == "toy-ablations"
    arms = _form_field(page, "Arms")
    assert "full_bridge" in arms.input_value() and "direct_grpo" in arms.input_value()
    shots.append(_screenshot(page, screenshots / "ablation-sweep-form.png"))
    return shots


def test_post_train_from_the_prefect_ui(stack, screenshots):
    from playwright.sync_api import sync_playwright

    run_name = f"ui-test-{int(time.time())}"
    shots = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(UI_TIMEOUT_MS)
        # Printed when the test fails: failed API calls and the pages' own errors.
        context.on("response", lambda r: r.status >= 400 and print("HTTP", r.status, r.request.method, r.url))
        context.on("requestfailed", lambda r: print("request failed:", r.method, r.url, r.failure))
        context.on("console", lambda m: m.type == "error" and print("console:", m.text))
        context.on("weberror", lambda e: print("page error:", e.error))
        try:
            page = context.new_page()
            flow_run_id, form_shot = _start_post_train_from_form(page, stack, run_name, screenshots)
            shots.append(form_shot)

            # While the toy run trains: the sweep deployment's schedule and form.
            shots += _check_sweep_deployment(context.new_page(), stack, screenshots)

            _wait_for_flow_run(stack["api"], flow_run_id, stack["serve_log"])
            page.goto(f"{stack['prefect_ui']}/runs/flow-run/{flow_run_id}", wait_until="networkidle")
            page.get_by_text(run_name, exact=True).first.wait_for()
            page.get_by_text("Completed", exact=True).first.wait_for()
            page.get_by_text(f"{stack['num_stages']} Task runs", exact=True).first.wait_for()
            page.locator("canvas").first.wait_for()  # the task graph, drawn on a canvas
            page.wait_for_timeout(2000)
            shots.append(_screenshot(page, screenshots / "prefect-flow-run.png"))

            parent = _mlflow_parent_run(stack["tracking_uri"], flow_run_id)
            assert parent.info.status == "FINISHED"
            _assert_student_registered(stack["tracking_uri"], flow_run_id)
            url = f"{stack['mlflow_ui']}/#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}"
            page.goto(url, wait_until="load")
            page.get_by_text(parent.info.run_name, exact=True).first.wait_for()
            # The classic tracking view rather than the GenAI one, and no assistant panel over it.
            if page.get_by_role("button", name="Model training", exact=True).count():
                page.get_by_role("button", name="Model training", exact=True).click()
                page.goto(url, wait_until="load")
            if page.get_by_role("button", name="Close", exact=True).count():
                page.get_by_role("button", name="Close", exact=True).click()
            page.get_by_text(parent.info.run_name, exact=True).first.wait_for()
            page.get_by_text("Finished", exact=True).first.wait_for()
            page.get_by_text("eval/student_final", exact=True).first.wait_for()  # a child run link
            shots.append(_screenshot(page, screenshots / "mlflow-run.png"))
        except Exception:
            for i, open_page in enumerate(context.pages):  # what the browser showed when it failed
                open_page.screenshot(path=str(screenshots / f"failure-{i}.png"))
            raise
        finally:
            browser.close()
    assert [s.name for s in shots] == [
        "post-train-form.png",
        "ablation-sweep-schedule.png",
        "ablation-sweep-form.png",
        "prefect-flow-run.png",
        "mlflow-run.png",
    ]
