"""student_rl: the GRPO stage (see `grpo.py`) under its pipeline name.

python -m sparse2dense.stages.student_rl SPEC.json
"""

from sparse2dense.graph import Stage
from sparse2dense.stages.grpo import run_grpo
from sparse2dense.stages.program import run_stage


def main() -> None:
    run_stage(Stage.STUDENT_RL, run_grpo)


if __name__ == "__main__":
    main()
