"""Per-model prompting: turn a task's prompt into what a model is sent, as the model config says.

A model config's ``prompting`` section (data, see ``configs/model/*.yaml``) declares a system
prompt, whether each task is sent through the chat template, the thinking delimiters, and a
generation prefix appended after the rendered prompt.
"""

from __future__ import annotations

from harness.tasks.base import Prompt


def uses_chat_template(prompting: dict, task_name: str) -> bool:
    table = prompting.get("use_chat_template") or {}
    if isinstance(table, bool):
        return table
    return bool(table.get(task_name, table.get("default", True)))


def as_raw_text(messages: list[dict]) -> str:
    """Messages sent without a chat template: their contents, in order, separated by blank lines."""
    return "\n\n".join(str(m["content"]) for m in messages if m.get("content"))


def apply(prompt: Prompt, prompting: dict | None, task_name: str) -> tuple[Prompt, str, dict]:
    """The prompt to send, the generation prefix, and the thinking meta for graders.

    Returns ``(prompt, prefix, thinking)`` where ``thinking`` holds the delimiters and whether the
    prompt itself opened the thinking (see ``harness.tasks.base.final_answer_text``).
    """
    prompting = prompting or {}
    prefix = prompting.get("generation_prefix") or ""
    thinking = dict(prompting.get("thinking") or {})
    chat = isinstance(prompt, list) and uses_chat_template(prompting, task_name)
    if isinstance(prompt, list):
        system = prompting.get("system_prompt")
        if system and not any(m.get("role") == "system" for m in prompt):
            prompt = [{"role": "system", "content": system}, *prompt]
        if not chat:
            prompt = as_raw_text(prompt)
    start, end = thinking.get("start"), thinking.get("end")
    opened_by_template = bool(thinking.get("opened")) and chat
    opened_by_prefix = bool(start) and start in prefix and not (end and end in prefix)
    meta = {"start": start, "end": end, "opened": opened_by_template or opened_by_prefix}
    return prompt, prefix, meta
