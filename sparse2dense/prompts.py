"""Prompt rendering: the one function that turns a problem into model input, for training and eval.

The instruction template (PAPER.md: "... output the final answer within \\boxed{}.") wraps the
problem in a single user turn, rendered with the tokenizer's chat template and
`chat_template_kwargs` (e.g. `enable_thinking=False` for Qwen3). Rendered text is tokenized without
special tokens (`encode_prompt`): a template that writes its BOS (Llama 3) must not get a second one.
TRL's GRPO and distillation trainers tokenize a *string* prompt with special tokens added, so they get
the conversation instead (`prompt_conversations`) and render it themselves with the same template
and kwargs, which tokenizes exactly as `encode_prompt(render_prompt(...))`.
"""

from __future__ import annotations

from typing import Any

from sparse2dense.graph import PromptFormat


def format_instruction(problem: str, template: str) -> str:
    # Plain substitution rather than str.format: LaTeX braces in templates and problems stay literal.
    return template.replace("{problem}", problem)


def prompt_messages(problem: str, template: str) -> list[dict[str, str]]:
    """The conversation a problem becomes: one user turn."""
    return [{"role": "user", "content": format_instruction(problem, template)}]


def render_prompt(
    tokenizer: Any, problem: str, template: str, chat_template_kwargs: dict[str, Any] | None = None
) -> str:
    """The text the model sees before its answer (generation prompt included)."""
    return tokenizer.apply_chat_template(
        prompt_messages(problem, template),
        tokenize=False,
        add_generation_prompt=True,
        **(chat_template_kwargs or {}),
    )


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """A rendered prompt's token ids: the template's own special tokens only, none added."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def render_prompts(tokenizer: Any, problems: list[dict[str, Any]], prompt: PromptFormat) -> list[str]:
    """`render_prompt` for each record, with a stage's prompt section (template + chat kwargs)."""
    return [
        render_prompt(tokenizer, p["problem"], prompt.template, dict(prompt.chat_template_kwargs))
        for p in problems
    ]


def prompt_conversations(problems: list[dict[str, Any]], prompt: PromptFormat) -> list[list[dict[str, str]]]:
    """The prompts of a TRL trainer's dataset, one conversation per record; the trainer's config gets
    `prompt.chat_template_kwargs` as its `chat_template_kwargs`."""
    return [prompt_messages(p["problem"], prompt.template) for p in problems]
