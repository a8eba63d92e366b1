"""The one function that turns a prompt (and optionally a principle) into model input text.

Decoding and PersRM training both call :func:`render_input`, so a PersRM is always queried in the form it
was trained on.
"""

from __future__ import annotations

from typing import Literal

from transformers import PreTrainedTokenizerBase

GUIDELINES = "[Guidelines] Your task is to generate response by considering the following principle."

RenderStyle = Literal["auto", "system", "paper"]


def paper_form(prompt: str, principle: str) -> str:
    """The PAD paper's PersRM input: guidelines, principle, then the instruction."""
    return f"{GUIDELINES}\n[Principles] {principle}\n[Instruction] {prompt}"


def render_input(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    principle: str | None = None,
    style: RenderStyle = "auto",
) -> str:
    """Render ``prompt`` for ``tokenizer``'s model, conditioned on ``principle`` when one is given.

    ``style="system"`` puts the principle in a system message (the default when the tokenizer has a chat
    template); ``style="paper"`` uses the paper's ``[Guidelines] … [Principles] … [Instruction] …`` form as
    the user turn (or as the whole text for a model without a chat template, which gets a plain
    ``Question: … Answer:`` frame).
    """
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if style == "auto":
        style = "system" if has_template else "paper"
    if style not in ("system", "paper"):
        raise ValueError(f"unknown render style {style!r}; use auto, system or paper")
    if not has_template:
        question = prompt if principle is None else paper_form(prompt, principle)
        return f"Question: {question}\nAnswer:"
    if principle is None:
        messages = [{"role": "user", "content": prompt}]
    elif style == "system":
        messages = [{"role": "system", "content": principle}, {"role": "user", "content": prompt}]
    else:
        messages = [{"role": "user", "content": paper_form(prompt, principle)}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
