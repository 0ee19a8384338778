"""Stage programs. Each runs as its own process: `python -m sparse2dense.stages.<name> SPEC.json`.

`Stage` names the programs; `STAGE_VERSION` is bumped by hand when a stage's behaviour changes, so
old cached outputs stop matching.
"""

from enum import StrEnum


class Stage(StrEnum):
    DATA_PREP = "data_prep"
    BASE = "base"
    TEACHER_RL = "teacher_rl"
    TEACHER_ROLLOUTS = "teacher_rollouts"
    WARMUP = "warmup"
    OPD = "opd"
    STUDENT_RL = "student_rl"
    EVAL = "eval"


STAGE_VERSION: dict[Stage, int] = {
    Stage.DATA_PREP: 3,
    Stage.BASE: 1,
    Stage.TEACHER_RL: 2,
    Stage.TEACHER_ROLLOUTS: 3,
    Stage.WARMUP: 3,
    Stage.OPD: 3,
    Stage.STUDENT_RL: 2,
    Stage.EVAL: 3,
}
