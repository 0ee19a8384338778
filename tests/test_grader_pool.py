"""The grader never hangs: adversarial answers get a verdict within the limit, from any thread.

A 2 s limit keeps the file fast. Inputs that truly stall sympy (a bignum power whose exponent is a
product, which no cheap guard evaluates) prove the worker is SIGKILLed and replaced; afterwards
the same pool still grades ordinary answers correctly.
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from sparse2dense import grader_pool
from sparse2dense.grading import Verdict, grade_answer, grade_completion

LIMIT_S = 2.0
SLACK_S = 1.0
# Passes every guard (one caret, 3-digit base) yet asks sympy for a ~3-billion-digit integer.
STALLS_SYMPY = r"999^{999 \cdot 999 \cdot 999}"

ADVERSARIAL = {
    "power tower": r"\boxed{9^{9^{9^{9}}}}",
    "parenthesized tower": r"\boxed{((999^{999})^{999})^{999}}",
    "chained superscripts": r"\boxed{2^{999}^{999}^{999}}",
    "deep nesting": r"\boxed{" + "(" * 200 + "1" + ")" * 200 + "}",
    "guard-passing bignum": rf"\boxed{{{STALLS_SYMPY}}}",
    "10k-deep nesting": r"\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}",
    "1 MB answer": r"\boxed{" + "x+" * 500_000 + "}",
    "1 MB of unclosed boxes": r"\boxed{" * 150_000,
    "malformed frac": r"\boxed{\frac{1}{}}",
    "malformed sqrt": r"\boxed{\sqrt[}{2}}",
    "mismatched delimiters": r"\boxed{\left( 1, 2 \right]}",
    "unbalanced braces": r"\boxed{1 + {2}",
    "stray closers": r"\boxed{}}}{{{",
}


@pytest.fixture(scope="module")
def pool():
    pool = grader_pool.configure(workers=2, limit_s=LIMIT_S)
    pool.warm()
    yield pool
    grader_pool.shutdown()


def _timed(fn, *args):
    start = time.monotonic()
    result = fn(*args)
    return result, time.monotonic() - start


def _still_serves():
    assert grade_answer("x^2+1", "1+x^2").verdict is Verdict.CORRECT
    assert grade_answer(r"\frac{\sqrt{3}}{2}", r"\frac{3}{2\sqrt{3}}").verdict is Verdict.CORRECT
    assert grade_answer("x^2+1", "x^2-1").verdict is Verdict.WRONG


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_from_main_thread(pool, name):
    grade, elapsed = _timed(grade_completion, "1", ADVERSARIAL[name])
    assert elapsed < LIMIT_S + SLACK_S, f"{name}: {elapsed:.2f}s"
    assert grade.verdict in set(Verdict) and grade.reason
    assert grade.verdict is not Verdict.CORRECT
    _still_serves()


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_from_worker_thread(pool, name):
    result = {}

    def run():
        result["grade"], result["elapsed"] = _timed(grade_completion, "2", ADVERSARIAL[name])

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(LIMIT_S + SLACK_S + 5)
    assert not thread.is_alive()
    assert result["elapsed"] < LIMIT_S + SLACK_S, f"{name}: {result['elapsed']:.2f}s"
    assert result["grade"].verdict is not Verdict.CORRECT and result["grade"].reason
    _still_serves()


def test_stuck_worker_is_killed_and_replaced(pool):
    before = pool.stats.workers_replaced
    grade, elapsed = _timed(grade_answer, "3", STALLS_SYMPY)
    assert grade.verdict is Verdict.TIMEOUT and "killed" in grade.reason
    assert LIMIT_S <= elapsed < LIMIT_S + SLACK_S
    assert pool.stats.workers_replaced == before + 1
    _still_serves()


def test_hang_from_a_thread_pool_holding_the_gil(pool):
    """The stalling input from executor threads: both time out, and a plain answer is still graded."""
    pool.warm()  # the workers replaced by earlier tests start first: their start-up is not the limit
    with ThreadPoolExecutor(max_workers=2) as executor:
        futures = [executor.submit(_timed, pool.check, str(i), STALLS_SYMPY) for i in range(2)]
        results = [f.result(timeout=LIMIT_S + SLACK_S + 5) for f in futures]
    for outcome, elapsed in results:
        assert outcome.verdict == "timeout" and elapsed < LIMIT_S + SLACK_S
    _still_serves()


def test_workers_outlive_the_thread_that_replaced_them(pool):
    """A replacement started on behalf of a short-lived caller thread keeps serving after it exits."""
    thread = threading.Thread(target=pool.check, args=("4", STALLS_SYMPY))
    thread.start()
    thread.join()
    pool.warm()
    time.sleep(0.5)
    assert [o.verdict for o in (pool.check("z+1", f"1+z+{i}-{i}") for i in range(2 * pool.workers))] == [
        "correct"
    ] * (2 * pool.workers)


def test_dead_worker_is_replaced(pool):
    pool.warm()
    victim = pool._idle.get()
    victim.process.kill()
    victim.process.wait()
    pool._idle.put(victim)
    outcomes = [pool.check("y+1", f"1+y+{i}-{i}") for i in range(pool.workers + 1)]
    assert any(o.verdict == "error" and "died" in o.reason for o in outcomes)
    assert grade_answer("y^2", "y*y").verdict is Verdict.CORRECT


def test_verdict_table(pool):
    cases = [
        ("42", r"so \boxed{42}", Verdict.CORRECT, "normalized string match"),
        (r"\frac{1}{2}", r"\boxed{0.5}", Verdict.CORRECT, "numeric comparison"),
        ("3", r"\boxed{4}", Verdict.WRONG, "numeric comparison"),
        ("x^2+1", r"\boxed{1+x^2}", Verdict.CORRECT, "symbolic equivalence"),
        ("x^2+1", r"\boxed{x^2+2}", Verdict.WRONG, "symbolic equivalence"),
        ("3", "no box at all", Verdict.NO_ANSWER, "no boxed answer"),
        ("3", r"\boxed{9^{9^{9}}}", Verdict.WRONG, "guarded: nested exponent (power tower)"),
        ("3", r"\boxed 3", Verdict.CORRECT, "normalized string match"),
        ("3", rf"\boxed{{{STALLS_SYMPY}}}", Verdict.TIMEOUT, "symbolic check killed"),
    ]
    for gold, completion, verdict, reason in cases:
        grade = grade_completion(gold, completion)
        assert grade.verdict is verdict, (gold, completion, grade)
        assert grade.reason.startswith(reason), (gold, completion, grade)


def test_symbolic_towers_are_not_guarded(pool):
    assert grade_answer("e^{-x^2}", r"\frac{1}{e^{x^{2}}}").verdict is Verdict.CORRECT


def test_fast_path_never_reaches_the_pool(pool):
    calls = pool.stats.calls
    assert grade_answer("1,000", "1000").correct
    assert grade_answer(r"\dfrac{1}{4}", "0.25").correct
    assert not grade_answer("7", "8").correct
    assert pool.stats.calls == calls


def test_repeated_pairs_are_cached(pool):
    hits = pool.stats.cache_hits
    first, cold = _timed(grade_answer, r"\sin^2 t + \cos^2 t", "1")
    second, warm = _timed(grade_answer, r"\sin^2 t + \cos^2 t", "1")
    assert first == second
    assert pool.stats.cache_hits == hits + 1
    timeout, _ = _timed(grade_answer, "5", STALLS_SYMPY)
    again, elapsed = _timed(grade_answer, "5", STALLS_SYMPY)
    assert timeout.verdict is again.verdict is Verdict.TIMEOUT and elapsed < 0.1


def test_many_concurrent_calls_agree_with_sequential(pool):
    pairs = [(f"{k}x+{k}", f"{k}(x+1)") for k in range(1, 25)] + [(f"{k}x", f"{k}x+1") for k in range(1, 25)]
    expected = [Verdict.CORRECT] * 24 + [Verdict.WRONG] * 24
    with ThreadPoolExecutor(max_workers=8) as executor:
        grades = list(executor.map(lambda pair: grade_answer(*pair), pairs * 2))
    assert [g.verdict for g in grades] == expected * 2


def test_closed_pool_answers_with_an_error():
    closed = grader_pool.GraderPool(workers=1, limit_s=LIMIT_S)
    closed.close()
    outcome = closed.check("1", "x")
    assert outcome.verdict == "error" and "closed" in outcome.reason
