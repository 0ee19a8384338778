"""Deployment material parses with the tools that will read it: Prefect's prefect.yaml model, the
Kubernetes base job template's variables schema and templating, docker compose's file format."""

import ast
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"


@pytest.fixture(scope="module")
def prefect_yaml():
    from prefect.cli.deploy._models import PrefectYamlModel

    raw = yaml.safe_load((INFRA / "prefect.yaml").read_text())
    return PrefectYamlModel.model_validate(raw)


def test_prefect_yaml_declares_the_deployments(prefect_yaml):
    by_name = {d.name: d for d in prefect_yaml.deployments}
    assert set(by_name) == {
        "post-train",
        "ablation-sweep",
        "evaluate",
        "post-train-k8s",
        "ablation-sweep-k8s",
        "evaluate-k8s",
        "run-stage",
        "run-stage-k8s",
    }
    entrypoints = {
        "post-train": "flows/post_train.py:post_train",
        "ablation-sweep": "flows/sweep.py:ablation_sweep",
        "evaluate": "flows/evaluate.py:evaluate",
        "run-stage": "flows/stage.py:run_stage",
    }
    for name, entrypoint in entrypoints.items():
        assert by_name[name].entrypoint == entrypoint
        assert by_name[name].work_pool.name == "s2d-process"
        assert by_name[f"{name}-k8s"].entrypoint == entrypoint
        assert by_name[f"{name}-k8s"].work_pool.name == "s2d-k8s"
        assert by_name[f"{name}-k8s"].work_pool.job_variables["gpus"] >= 1
    assert prefect_yaml.pull == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $S2D_APP_DIR }}"}}
    ]


def test_sweep_has_a_valid_nightly_cron(prefect_yaml):
    from prefect.client.schemas.schedules import CronSchedule

    sweeps = [d for d in prefect_yaml.deployments if d.entrypoint == "flows/sweep.py:ablation_sweep"]
    for deployment in sweeps:
        (schedule,) = deployment.schedules
        cron = CronSchedule(cron=schedule.cron, timezone=schedule.timezone)
        assert cron.cron == "0 2 * * *" and schedule.active is False
        assert deployment.parameters["sweep"] == "{{ prefect.variables.s2d_paper_ablations }}"


@pytest.mark.parametrize(
    "entrypoint",
    sorted({"flows/post_train.py:post_train", "flows/sweep.py:ablation_sweep", "flows/evaluate.py:evaluate"}),
)
def test_entrypoints_name_flow_functions(entrypoint):
    path, func = entrypoint.split(":")
    source = ROOT / path
    if not source.is_file():
        pytest.skip(f"{path} is not in this checkout")
    tree = ast.parse(source.read_text())
    assert func in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


def test_k8s_job_template_requests_gpus():
    from prefect.utilities.templating import apply_values, find_placeholders

    template = json.loads((INFRA / "k8s" / "base-job-template.json").read_text())
    variables = template["variables"]
    import jsonschema

    jsonschema.Draft7Validator.check_schema(variables)
    declared = set(variables["properties"])
    used = {p.name for p in find_placeholders(template["job_configuration"])}
    assert used <= declared, used - declared
    defaults = {k: v["default"] for k, v in variables["properties"].items() if "default" in v}
    rendered = apply_values(template["job_configuration"], defaults | {"gpus": 4})
    container = rendered["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 4


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


def test_compose_services_and_loopback_ports(compose):
    services = compose["services"]
    assert {"postgres", "prefect-server", "mlflow", "worker"} <= set(services)
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    prefect_env = services["prefect-server"]["environment"]
    assert prefect_env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    mlflow_cmd = " ".join(services["mlflow"]["command"])
    assert "--backend-store-uri=postgresql://" in mlflow_cmd and "--serve-artifacts" in mlflow_cmd
    worker = services["worker"]
    assert "--pool" in worker["command"] and "s2d-process" in worker["command"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


def test_compose_secrets_come_from_the_env_file(compose):
    text = (INFRA / "docker-compose.yml").read_text()
    example = (INFRA / ".env.example").read_text()
    assert "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?" in text
    referenced = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    provided = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", example, flags=re.M))
    assert referenced <= provided, referenced - provided
    assert "infra/.env" in (ROOT / ".gitignore").read_text().split()


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_compose_file_validates(tmp_path):
    env = tmp_path / ".env"
    env.write_text((INFRA / ".env.example").read_text())
    proc = subprocess.run(
        ["docker-compose", "-f", str(INFRA / "docker-compose.yml"), "--env-file", str(env), "config", "-q"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


def test_dockerfile_runs_as_a_user_with_the_vllm_extra():
    text = (INFRA / "Dockerfile").read_text()
    assert re.search(r"^FROM \$\{CUDA_IMAGE\}", text, flags=re.M) and "nvidia/cuda:" in text
    assert '".[vllm,deepspeed]"' in text
    user = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert user and user[-1] not in {"root", "0"}
