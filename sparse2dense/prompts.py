"""Prompt rendering: the one function that turns a problem into model input, for training and eval.

The instruction template (PAPER.md: "... output the final answer within \\boxed{}.") wraps the
problem in a single user turn, rendered with the tokenizer's chat template and
`chat_template_kwargs` (e.g. `enable_thinking=False` for Qwen3).
"""

from __future__ import annotations

from typing import Any


def format_instruction(problem: str, template: str) -> str:
    # Plain substitution rather than str.format: LaTeX braces in templates and problems stay literal.
    return template.replace("{problem}", problem)


def render_prompt(
    tokenizer: Any, problem: str, template: str, chat_template_kwargs: dict[str, Any] | None = None
) -> str:
    """The text the model sees before its answer (generation prompt included)."""
    messages = [{"role": "user", "content": format_instruction(problem, template)}]
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, **(chat_template_kwargs or {})
    )


def render_prompts(tokenizer: Any, problems: list[dict[str, Any]], prompt: dict[str, Any]) -> list[str]:
    """`render_prompt` for each record, with a stage's prompt section (template + chat kwargs)."""
    return [
        render_prompt(tokenizer, p["problem"], prompt["template"], prompt["chat_template_kwargs"])
        for p in problems
    ]
