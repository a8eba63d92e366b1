"""Guidance across tokenizers: a PersRM that reads the decoded *text*, for a base with another vocabulary.

The token-level reward needs ``log pi_rm(a | s, p)`` for the base's candidate token ``a``. When the PersRM
tokenizes differently, ``a`` is not a PersRM token; its text is. So the reward of a candidate is the PersRM's
log-probability of the candidate's text as a continuation of the text decoded so far,
``log pi_rm(s + a) - log pi_rm(s)`` with each text in the PersRM's own tokenization, which may take several
PersRM tokens (and may re-tokenize the last one: `` hel`` + ``lo`` is `` hello``).
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from padkit.decoding.reward import CachedRows
from padkit.models.row_lora import LoRARows

REPLACEMENT = "\ufffd"
"""What a tokenizer decodes an incomplete UTF-8 sequence to."""


def committed_text(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> str:
    """The text of ``ids`` up to its last complete character.

    A byte-level or byte-fallback token can hold part of a UTF-8 character; such trailing tokens add no text
    until the token that completes the character arrives (at most 3 tokens are held back, the longest
    incomplete UTF-8 sequence).
    """
    text = tokenizer.decode(ids, skip_special_tokens=True)
    for held in range(1, min(3, len(ids)) + 1):
        if not text.endswith(REPLACEMENT):
            break
        text = tokenizer.decode(ids[: len(ids) - held], skip_special_tokens=True)
    return text


def continuation_texts(
    tokenizer: PreTrainedTokenizerBase, ids: list[int], text: str, candidates: list[int], eos: set[int]
) -> list[str | None]:
    """Each candidate's text after ``text`` (``""`` for EOS), or ``None`` where it has no text of its own yet.

    ``None`` marks a token that is part of an unfinished character, a special token, or one whose decoding
    rewrites the text before it; PAD gives those a neutral reward of 0.
    """
    out: list[str | None] = []
    for token in candidates:
        if token in eos:
            out.append("")
            continue
        full = tokenizer.decode([*ids, token], skip_special_tokens=True)
        ok = full.startswith(text) and len(full) > len(text) and not full.endswith(REPLACEMENT)
        out.append(full[len(text) :] if ok else None)
    return out


def _token_tree(advance: list[int], segments: list[list[int]]) -> tuple[list[tuple[int, int]], list]:
    """Nodes ``(token, parent index or -1)``: the new stable tokens in a chain, then the open segment, then
    each candidate segment (under the open segment when it extends it); and per segment its node indices and
    whether it is relative to the open segment already (``None``) or a separate branch."""
    nodes: list[tuple[int, int]] = []

    def branch(tokens: list[int], parent: int) -> list[int]:
        cols = []
        for token in tokens:
            nodes.append((token, parent))
            parent = len(nodes) - 1
            cols.append(parent)
        return cols

    root = branch(advance, -1)[-1] if advance else -1
    open_seg = segments[0]
    open_cols = branch(open_seg, root)
    scored = [(open_cols, root)]
    for seg in segments[1:]:
        if seg and seg[: len(open_seg)] == open_seg:
            scored.append((branch(seg[len(open_seg) :], open_cols[-1] if open_cols else root), None))
        else:
            scored.append((branch(seg, root), root))
    return nodes, scored


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class TextRewardStream(CachedRows):
    """A PersRM fed the base's decoded text, scoring each candidate's text in one batched forward per step.

    Each PersRM row keeps a KV cache over its prompt and the *stable* tokens of the text so far: the PersRM's
    tokenization of the text minus its last token, which may still merge with what comes next. Every step
    re-tokenizes only the tail (the last ``retokenize`` stable tokens onward); when that changes earlier
    tokens, the changed ones are dropped from the cache (masked out, and cropped once no row needs them)
    and the new ones fed. The new stable tokens and, for each candidate, the open last token plus the
    candidate's text form a small token tree run in one forward: a 4-D attention mask lets each token see the
    cache and its ancestors only, so ``k`` candidates cost one forward, not ``k``; a leaf (most candidates are
    one PersRM token) is not fed at all, its log-prob is read off its parent. Tree tokens are cropped from the
    cache afterwards.

    ``source_rows[j]`` is the decoding row that PersRM row ``j`` follows; ``lora_rows`` and ``adapters`` as in
    :class:`~padkit.decoding.reward.CachedRows`.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        base_tokenizer: PreTrainedTokenizerBase,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor,
        source_rows: torch.LongTensor,
        base_eos: list[int],
        eos_token_id: int,
        lora_rows: LoRARows | None = None,
        retokenize: int = 3,
        adapters: bool | None = None,
    ) -> None:
        super().__init__(model, lora_rows, adapters)
        self.tokenizer = tokenizer
        self.base_tokenizer = base_tokenizer
        self.input_ids = input_ids
        self.source_rows = source_rows
        self.base_eos = set(base_eos)
        self.eos_token_id = eos_token_id
        self.retokenize = retokenize
        self.mask = attention_mask.clone()
        self.prompt_length: int | None = None
        rows = input_ids.shape[0]
        self.stable: list[list[int]] = [[] for _ in range(rows)]
        self.slots: list[list[int]] = [[] for _ in range(rows)]
        self.prompt_logp: torch.Tensor | None = None
        self.next_logp: torch.Tensor | None = None

    def _start(self) -> None:
        position_ids = (self.mask.cumsum(dim=1) - 1).clamp(min=0)
        logp = self._forward(
            input_ids=self.input_ids, attention_mask=self.mask, position_ids=position_ids, logits_to_keep=1
        )
        self.prompt_logp = logp[:, -1]
        self.next_logp = self.prompt_logp.clone()

    def _plan(self, row: int, text: str) -> tuple[int, list[int], str]:
        """How many stable tokens survive, the new stable tokens, and the open text after them."""
        stable = self.stable[row]
        anchor = max(0, len(stable) - self.retokenize)
        head = self.tokenizer.decode(stable[:anchor])
        if not text.startswith(head):
            anchor, head = 0, ""
        tail = self.tokenizer(text[len(head) :], add_special_tokens=False)["input_ids"]
        new_stable = stable[:anchor] + tail[:-1]
        keep = _common_prefix(stable, new_stable)
        if keep < len(stable) and keep == len(new_stable) and keep > 0:
            keep -= 1  # re-feed one kept token: its logits are the next-token distribution we need
        open_text = text[len(self.tokenizer.decode(new_stable)) :] if new_stable else text
        return keep, new_stable[keep:], open_text

    @torch.inference_mode()
    def score(self, input_ids: torch.LongTensor, candidates: torch.LongTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities of each candidate's text for every PersRM row, and which candidates have text.

        ``input_ids`` is the base's full batch (prompt + generated); ``candidates`` its ``(batch, k)`` ids.
        Returns ``(rows, k)`` log-probabilities and a ``(batch, k)`` mask, false where the candidate gets a
        neutral reward (see :func:`continuation_texts`).
        """
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
            self._start()
        texts, conts = [], []
        for ids, cand in zip(input_ids[:, self.prompt_length :].tolist(), candidates.tolist(), strict=True):
            stop = next((i for i, t in enumerate(ids) if t in self.base_eos), len(ids))
            text = committed_text(self.base_tokenizer, ids[:stop])
            texts.append(text)
            conts.append(continuation_texts(self.base_tokenizer, ids[:stop], text, cand, self.base_eos))
        valid = torch.tensor([[c is not None for c in row] for row in conts], dtype=torch.bool)

        plans = [self._plan(j, texts[b]) for j, b in enumerate(self.source_rows.tolist())]
        segment_texts = []
        for (_, _, open_text), b in zip(plans, self.source_rows.tolist(), strict=True):
            segment_texts.append(open_text)
            segment_texts += [open_text + (c or "") for c in conts[b]]
        encoded = self.tokenizer(segment_texts, add_special_tokens=False)["input_ids"] if segment_texts else []
        k = candidates.shape[1]
        segments = []
        for j, b in enumerate(self.source_rows.tolist()):
            row = encoded[j * (k + 1) : (j + 1) * (k + 1)]
            row = [row[0]] + [
                [] if c is None else seg + [self.eos_token_id] if c == "" else seg
                for seg, c in zip(row[1:], conts[b], strict=True)
            ]
            segments.append(row)

        for j, (keep, _, _) in enumerate(plans):
            self.mask[j, self.slots[j][keep:]] = 0
            self.slots[j] = self.slots[j][:keep]
            self.stable[j] = self.stable[j][:keep]
        scores = self._tree_forward([p[1] for p in plans], segments)
        self._trim()
        return torch.where(valid[self.source_rows], scores, 0.0), valid

    def _tree_forward(self, advances: list[list[int]], segments: list[list[list[int]]]) -> torch.Tensor:
        """One forward over a small token tree per row; ``log p(segment) - log p(open segment)`` per candidate.

        Row ``j``'s block is its new stable tokens, then the open segment (``segments[j][0]``), then each
        candidate segment: where it starts with the open segment only its extra tokens are added, under the open
        segment; otherwise it is its own branch. A token sees the cache and its ancestors in the tree only.
        """
        rows, past = len(advances), self.mask.shape[1]
        trees = [_token_tree(adv, segs) for adv, segs in zip(advances, segments, strict=True)]
        # Only the new stable tokens and tokens with children are fed: a leaf's log-prob is read off its parent.
        feds = []
        for adv, (nodes, _) in zip(advances, trees, strict=True):
            has_child = {parent for _, parent in nodes}
            feds.append([q for q in range(len(nodes)) if q < len(adv) or q in has_child])
        width = max(1, max(len(fed) for fed in feds))
        ids = torch.full((rows, width), self.tokenizer.pad_token_id or 0, dtype=torch.long)
        positions = torch.zeros((rows, width), dtype=torch.long)
        visible = torch.zeros((rows, width, past + width), dtype=torch.bool)
        visible[:, :, :past] = self.mask.bool()[:, None, :]
        visible[:, torch.arange(width), past + torch.arange(width)] = True
        columns = []
        for j, ((nodes, _), fed) in enumerate(zip(trees, feds, strict=True)):
            start = int(self.mask[j].sum())
            column = {q: i for i, q in enumerate(fed)}
            depth = {}
            for i, q in enumerate(fed):
                token, parent = nodes[q]
                ids[j, i] = token
                depth[q] = depth[parent] + 1 if parent >= 0 else 0
                positions[j, i] = start + depth[q]
                if parent >= 0:
                    visible[j, i, past:] = visible[j, column[parent], past:]
                    visible[j, i, past + i] = True
            columns.append(column)
        dtype = self.model.dtype
        mask4d = torch.zeros(visible.shape, dtype=dtype).masked_fill(~visible, torch.finfo(dtype).min)[:, None]
        device = self.model.device
        logp = self._forward(
            input_ids=ids.to(device), attention_mask=mask4d.to(device), position_ids=positions.to(device)
        ).cpu()

        prev = self.next_logp.cpu().clone()
        scores = torch.zeros(rows, len(segments[0]) - 1 if segments else 0, dtype=torch.float32)
        for j, (adv, (nodes, scored), column) in enumerate(zip(advances, trees, columns, strict=True)):
            if adv:
                prev[j] = logp[j, column[len(adv) - 1]]
            elif not self.stable[j]:
                prev[j] = self.prompt_logp[j]

            def logp_after(q: int, j: int = j, column: dict = column, nodes: list = nodes, adv: list = adv):
                parent = nodes[q][1]
                return (logp[j, column[parent]] if parent >= len(adv) else prev[j])[nodes[q][0]]

            open_logp = sum((logp_after(q) for q in scored[0][0]), torch.zeros(()))
            for c, (cols, parent) in enumerate(scored[1:]):
                # a branch under the open segment is already relative to it; a separate branch subtracts it
                total = sum((logp_after(q) for q in cols), torch.zeros(()))
                scores[j, c] = total - (open_logp if parent is not None else 0.0)
        self.next_logp = prev

        kept = max(len(a) for a in advances)
        self.cache.crop(-(width - kept))
        new_cols = torch.zeros((rows, kept), dtype=self.mask.dtype)
        for j, adv in enumerate(advances):
            new_cols[j, : len(adv)] = 1
            self.slots[j] += [past + q for q in range(len(adv))]
            self.stable[j] += adv
        self.mask = torch.cat([self.mask, new_cols], dim=1)
        return scores

    def _trim(self) -> None:
        """Crop the cache's trailing columns that no row uses any more (dropped or padding tokens)."""
        used = self.mask.any(dim=0).nonzero()
        length = int(used.max()) + 1 if used.numel() else 0
        if length < self.mask.shape[1]:
            self.cache.crop(-(self.mask.shape[1] - length))
            self.mask = self.mask[:, :length]
