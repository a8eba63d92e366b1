"""The one function that turns a prompt (and optionally a principle) into model input text.

Decoding and PersRM training both call :func:`render_input`, so a PersRM is always queried in the form it
was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from transformers import PreTrainedTokenizerBase

from padkit.errors import PadkitError

GUIDELINES = "[Guidelines] Your task is to generate response by considering the following principle."

RenderStyle = Literal["auto", "system", "paper"]
Prompt = str | Sequence[dict[str, str]]


def paper_form(prompt: str, principle: str) -> str:
    """The PAD paper's PersRM input: guidelines, principle, then the instruction."""
    return f"{GUIDELINES}\n[Principles] {principle}\n[Instruction] {prompt}"


def _transcript(messages: Sequence[dict[str, str]]) -> str:
    """Earlier turns as plain text, for models without a chat template; the last user turn stays the question."""
    return "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def render_input(
    tokenizer: PreTrainedTokenizerBase,
    prompt: Prompt,
    principle: str | None = None,
    style: RenderStyle = "auto",
) -> str:
    """Render ``prompt`` for ``tokenizer``'s model, conditioned on ``principle`` when one is given.

    ``prompt`` is a user text or a conversation (chat messages ending with the user turn to answer).
    ``style="system"`` puts the principle in a system message (the default when the tokenizer has a chat
    template); ``style="paper"`` uses the paper's ``[Guidelines] … [Principles] … [Instruction] …`` form in
    the last user turn (or as the whole text for a model without a chat template, which gets a plain
    ``Question: … Answer:`` frame).
    """
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if style == "auto":
        style = "system" if has_template else "paper"
    if style not in ("system", "paper"):
        raise ValueError(f"unknown render style {style!r}; use auto, system or paper")
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
    if not messages or messages[-1].get("role") != "user":
        raise ValueError("a conversation must end with a user turn")
    if not has_template:
        question = messages[-1]["content"] if len(messages) == 1 else _transcript(messages)
        return f"Question: {question if principle is None else paper_form(question, principle)}\nAnswer:"
    if principle is not None and style == "system":
        messages = [{"role": "system", "content": principle}, *[m for m in messages if m["role"] != "system"]]
    elif principle is not None:
        messages[-1]["content"] = paper_form(messages[-1]["content"], principle)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def render_clipped(
    tokenizer: PreTrainedTokenizerBase,
    prompt: Prompt,
    principle: str | None = None,
    max_tokens: int | None = None,
) -> str:
    """:func:`render_input`, shortened to ``max_tokens`` by dropping the oldest turns, then the start of the
    last user turn, so training and scoring see the end of a long conversation (the part the answer follows)."""
    text = render_input(tokenizer, prompt, principle)
    if max_tokens is None:
        return text
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
    while len(tokenizer(text, add_special_tokens=False)["input_ids"]) > max_tokens:
        if len(messages) > 1:
            messages = messages[1:]
            while messages[0]["role"] != "user":
                messages = messages[1:]
        else:
            content_ids = tokenizer(messages[0]["content"], add_special_tokens=False)["input_ids"]
            overflow = len(tokenizer(text, add_special_tokens=False)["input_ids"]) - max_tokens
            if overflow >= len(content_ids):
                raise PadkitError(f"the prompt frame alone is longer than {max_tokens} tokens; allow a longer prompt")
            messages[0]["content"] = tokenizer.decode(content_ids[overflow:])
        text = render_input(tokenizer, messages, principle)
    return text
