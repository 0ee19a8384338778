"""The grader stays fast on degenerate text: every pathological output is graded within seconds.

Answer extraction and normalization run in the caller's process (the GRPO reward, eval, `s2d grade`),
where no wall-clock limit can stop a regex, so each pattern must stay linear in the text. Seeded
inputs of 1-2 MB (special-token runs, unbalanced and glued boxes, brace, digit, `$`, `=` and newline
runs, mixed unicode, random mixtures of all of them) go through `grade_completion` (reward, eval) and
`grade` (`s2d grade`) in a child process that times each one; an input that hangs gets the child
killed and is named. The symbolic step is stubbed there: test_grader_pool covers its own limit.

    python -m tests.test_grader_abuse     # the child: one JSON line per (input, function) timing
"""

import json
import os
import queue
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOUND_S = 3.0  # per input and function; linear extraction needs well under 0.5 s for 2 MB
HANG_S = 20.0  # the child is killed when one input takes this long
STARTUP_S = 60.0
SEED = 20240601
SPECIAL = [
    "<|im_end|>", "<|im_start|>user", "<|a|>", "<|endoftext|>", r"\boxed{", r"\boxed", r"\fbox", "{", "}",
    "$", "$$", r"\(", r"\)", r"\[", r"\]", "=", " = ", "7", "12,", ".", " ", "\n", " and ", r"\text{",
    r"\quad", "_", "^", "α", "中", "😀", "∑", "\u200b", "answer:", "Final Answer", " is ", "####",
    "I hope it is correct.", "**", "%", r"\frac", "x", "y_{2} =", r"\le ", "<", ">", ",", "-",
]  # fmt: skip


def _sized(rng: random.Random, piece: str, tail: str = "") -> str:
    """`piece` repeated to 1-2 MB, then `tail`."""
    return piece * (rng.randint(1 << 20, 2 << 20) // len(piece)) + tail


def _mixture(rng: random.Random) -> str:
    """Special pieces, some alone and some in long runs, to 1-2 MB."""
    size, parts, total = rng.randint(1 << 20, 2 << 20), [], 0
    while total < size:
        parts.append(rng.choice(SPECIAL) * rng.choice([1, 1, 1, 7, 300, 5000]))
        total += len(parts[-1])
    return "".join(parts)


def pathological_inputs() -> dict[str, Callable[[random.Random], str]]:
    """Name -> builder of one input (from a seeded generator), so the parent knows the names only."""
    spaces = " " * 4000
    shapes = {
        "special tokens then a dash": lambda r: _sized(r, "<|a|>", "-"),
        "im_end run": lambda r: _sized(r, "<|im_end|>"),
        "im_end run then prose": lambda r: _sized(r, "<|im_end|>\n", "so x is 5"),
        "box then special tokens then a dash": lambda r: r"\boxed{1}" + _sized(r, "<|im_start|>", "-"),
        "unclosed boxes": lambda r: _sized(r, r"\boxed{"),
        "glued bare boxes": lambda r: _sized(r, r"\boxed"),
        "spaced bare boxes": lambda r: _sized(r, r"\fbox "),
        "open braces": lambda r: _sized(r, "{"),
        "close braces": lambda r: _sized(r, "}"),
        "nested braces in a box": lambda r: r"\boxed{" + "{" * (1 << 19) + "1" + "}" * (1 << 19) + "}",
        "spaces between boxes": lambda r: r"\boxed{1}" + _sized(r, " ", r"\boxed{2}"),
        "open text between boxes": lambda r: r"\boxed{1}\text{" + _sized(r, " ", r"\boxed{2}"),
        "subscript between boxes": lambda r: r"\boxed{1}y_" + _sized(r, "1", r"\boxed{2}"),
        "many joined boxes": lambda r: _sized(r, r"\boxed{1}, "),
        "digit run": lambda r: _sized(r, "9"),
        "digit groups": lambda r: _sized(r, "1,", "000"),
        "dollar run": lambda r: _sized(r, "$"),
        "dollar digits": lambda r: _sized(r, "$1"),
        "unclosed parens": lambda r: _sized(r, r"\("),
        "equals run": lambda r: _sized(r, "="),
        "assignments": lambda r: _sized(r, "x = "),
        "newline run": lambda r: _sized(r, "\n", "x"),
        "answer lines": lambda r: _sized(r, "\nanswer:"),
        "final answer phrases": lambda r: _sized(r, "The final answer is $"),
        "mixed unicode": lambda r: "".join(
            r.choices("αβγ∑∫√π中文😀é \u200b\n$", k=r.randint(1 << 19, 1 << 20))
        ),
        "box of spaces": lambda r: r"\boxed{1" + spaces + "x}",
        "box of spaces and a unit": lambda r: r"\boxed{5" + spaces + "c}",
        "box of spaces and an and": lambda r: r"\boxed{1" + spaces + ", and 2}",
        "box with an open text": lambda r: r"\boxed{1\text{" + spaces + "}}",
        "box of ranges": lambda r: r"\boxed{" + r"1 \le x " * 500 + "}",
    }
    return shapes | {f"random mixture {i}": _mixture for i in range(4)}


def _grading_functions() -> list[Callable]:
    from sparse2dense import grader_pool, grading

    class _NoSymbolicCheck:
        def check(self, gold: str, pred: str) -> grader_pool.Outcome:
            return grader_pool.Outcome("wrong", "symbolic check not run")

    grading.get_pool = _NoSymbolicCheck  # the in-process part alone is timed
    return [grading.grade_completion, grading.grade]


def _time_all() -> None:
    """The child: one JSON line per (input, function) with its grading time."""
    functions = _grading_functions()
    rng = random.Random(SEED)
    print(json.dumps({"ready": True}), flush=True)
    for name, build in pathological_inputs().items():
        text = build(rng)
        for function in functions:
            start = time.perf_counter()
            function("1", text)
            seconds = time.perf_counter() - start
            print(json.dumps({"input": name, "function": function.__name__, "s": seconds}), flush=True)


def _lines_of(process: subprocess.Popen) -> queue.Queue:
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_pathological_text_is_graded_in_bounded_time():
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.test_grader_abuse"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines, timings = _lines_of(child), {}
    expected = [(name, fn) for name in pathological_inputs() for fn in ("grade_completion", "grade")]
    try:
        assert json.loads(lines.get(timeout=STARTUP_S) or "{}").get("ready"), (
            "the timing child failed to start"
        )
        for name, function in expected:
            try:
                line = lines.get(timeout=HANG_S)
            except queue.Empty:
                raise AssertionError(f"{function} on {name!r} still running after {HANG_S:.0f}s") from None
            assert line is not None, f"the timing child died before {function} on {name!r}"
            row = json.loads(line)
            timings[(row["input"], row["function"])] = row["s"]
    finally:
        child.kill()
        child.wait()
    slow = {f"{fn} on {name!r}": f"{s:.2f}s" for (name, fn), s in timings.items() if s > BOUND_S}
    assert not slow, f"over {BOUND_S}s: {slow}"
    assert list(timings) == expected


def test_grade_command_finishes_adversarial_lines_within_the_limit(tmp_path):
    """`s2d grade --limit-s 1` on 2 MB adversarial lines: every record written, each within limit + 1 s."""
    limit_s, rng = 1.0, random.Random(SEED)
    builders = pathological_inputs()
    preds = [
        builders[name](rng)
        for name in ("special tokens then a dash", "unclosed boxes", "open text between boxes")
    ]
    records = [{"gold": "1", "pred": pred} for pred in preds] + [{"gold": "1", "pred": r"so \boxed{1}"}]
    src, out = tmp_path / "adversarial.jsonl", tmp_path / "graded.jsonl"
    src.write_text("".join(json.dumps(record) + "\n" for record in records))
    command = [sys.executable, "-c", "import sys; from flows.cli import main; sys.exit(main(sys.argv[1:]))"]
    done = subprocess.run(
        [*command, "grade", str(src), "--output", str(out), "--limit-s", str(limit_s), "--workers", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=len(records) * (limit_s + 1) + STARTUP_S,
    )
    assert done.returncode == 0, done.stderr
    graded = [json.loads(line) for line in out.read_text().splitlines()]
    assert [record["pred"] for record in graded] == [record["pred"] for record in records]
    assert all(record["ms"] <= (limit_s + 1) * 1000 for record in graded), [r["ms"] for r in graded]
    assert graded[-1]["verdict"] == "correct"


if __name__ == "__main__":
    _time_all()
