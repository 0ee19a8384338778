"""Run stage programs from a config the way `tasks/run_context.py` does (plan, payload, keys,
upstream results), without Prefect: for tests of the programs themselves."""

import os
import socket
import subprocess
from pathlib import Path

from sparse2dense.launch import stage_command
from sparse2dense.pipeline import plan_keys, stage_payload
from sparse2dense.spec import StageSpec
from sparse2dense.store import result_from_dir, stage_dir
from tests.conftest import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stage_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env |= {
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "S2D_GRADER_WORKERS": "1",
        "TRL_EXPERIMENTAL_SILENCE": "1",
    }
    for name in ("MLFLOW_RUN_ID", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    return env | extra


class Runner:
    def __init__(self, cfg, store: Path):
        self.cfg, self.store, self.keys, self.results = cfg, store, plan_keys(cfg), {}

    def run(self, name, stage, acts_on=None, env=None, local=False, **upstream):
        config, semantic = stage_payload(self.cfg, stage, acts_on)
        key = self.keys.get(name) or f"test-{name.replace('/', '-')}"
        spec = StageSpec(
            stage=stage,
            name=name,
            key=key,
            config=config,
            semantic_config=semantic,
            upstream={role: self.results[n] for role, n in upstream.items()},
            output_dir=str(stage_dir(self.store, str(stage), key)),
            seed=self.cfg.seed,
        )
        out = Path(spec.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "spec.json").write_text(spec.model_dump_json())
        cmd = stage_command(stage, str(out / "spec.json"), None if local else spec.inputs.launcher)
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env or stage_env(), cwd=ROOT, timeout=600
        )
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output[-4000:]
        self.results[name] = result_from_dir(out, name)
        return out, output, cmd
