"""Beam search for the two text-line recognisers, with shallow fusion of a character LM.

- `ctc_beam_search`: CTC prefix beam search (Hannun et al. 2014, "First-pass large vocabulary
  continuous speech recognition using bi-directional recurrent DNNs"; Graves 2012, ch. 7).
  Each prefix keeps two probabilities, ending in a blank and ending in its last label; at each
  step a prefix is extended by every label whose probability is at least `prune` (the rest are
  negligible for a peaky CTC output), a repeated label extends only from the blank-ending mass,
  and the `width` best prefixes survive. With a language model, every label appended to a prefix
  multiplies its probability by `P_LM(label | prefix) ** weight`, and the final ranking adds
  `weight * log P_LM(end | prefix)`.
- `attention_beam_search`: the usual beam over decoder steps (`AttentionOCR.step`), batched
  over lines and beams; a hypothesis that emits the end symbol is finished and keeps its score.
  With a language model, `weight * log P_LM` is added to the log-probability of every digit and
  of the end symbol (shallow fusion, Gulcehre et al. 2015).
No length normalisation: the lines' lengths are ruled by the end symbol and the LM's end term.

Both return, per line, the labels of the best hypothesis.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch

from nettle.models.attention_ocr import AttentionOCR
from nettle.train.char_lm import CharNGram
from nettle.train.ctc import BLANK

__all__ = ["attention_beam_search", "ctc_beam_search"]


def _logsumexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    hi = max(a, b)
    return hi + math.log1p(math.exp(-abs(a - b)))


def _ctc_one(
    lp: list[list[float]], width: int, lm: CharNGram | None, weight: float, prune: float
) -> list[int]:
    """Prefix beam search of one line; `lp` is (T, C) log-probabilities, labels = class - 1."""
    floor = math.log(prune)
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -math.inf)}  # (blank, label)
    for frame in lp:
        nxt: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [-math.inf, -math.inf])
        candidates = [c for c, v in enumerate(frame) if v >= floor and c != BLANK]
        for prefix, (pb, pnb) in beams.items():
            total = _logsumexp(pb, pnb)
            entry = nxt[prefix]
            entry[0] = _logsumexp(entry[0], total + frame[BLANK])
            if prefix:  # the last label repeated without a blank between: same prefix
                entry[1] = _logsumexp(entry[1], pnb + frame[prefix[-1] + 1])
            for c in candidates:
                label = c - 1
                lm_term = weight * float(lm.log_prob(prefix, label)) if lm is not None else 0.0
                source = pb if prefix and prefix[-1] == label else total
                new = nxt[(*prefix, label)]
                new[1] = _logsumexp(new[1], source + frame[c] + lm_term)
        ranked = sorted(nxt.items(), key=lambda kv: -_logsumexp(*kv[1]))[:width]
        beams = {k: (v[0], v[1]) for k, v in ranked}

    def final(item: tuple[tuple[int, ...], tuple[float, float]]) -> float:
        prefix, (pb, pnb) = item
        end = weight * float(lm.log_prob(prefix, lm.boundary)) if lm is not None else 0.0
        return _logsumexp(pb, pnb) + end

    return list(max(beams.items(), key=final)[0])


def ctc_beam_search(
    log_probs: torch.Tensor,
    width: int = 8,
    lm: CharNGram | None = None,
    weight: float = 0.0,
    prune: float = 1e-3,
) -> list[list[int]]:
    """Best labels of each line from CTC log-probabilities (N, C, T), class 0 the blank."""
    if width < 1:
        raise ValueError(f"beam width must be at least 1, got {width}")
    frames = log_probs.detach().float().log_softmax(1).transpose(1, 2).cpu().tolist()
    return [_ctc_one(lp, width, lm, weight, prune) for lp in frames]


@torch.no_grad()
def attention_beam_search(
    model: AttentionOCR,
    x: torch.Tensor,
    width: int = 8,
    lm: CharNGram | None = None,
    weight: float = 0.0,
) -> list[list[int]]:
    """Best labels of each line of images `x` (N, C, H, W) by beam search over the decoder."""
    if width < 1:
        raise ValueError(f"beam width must be at least 1, got {width}")
    n, eos, steps = len(x), model.eos, model.max_steps
    h, keys, state = model.encode(x)
    expand = lambda t: t.repeat_interleave(width, 0)  # noqa: E731 - (N, ...) -> (N * B, ...)
    h, keys, state = expand(h), expand(keys), expand(state)
    score = torch.full((n, width), -math.inf, device=x.device)
    score[:, 0] = 0.0
    tokens = torch.full((n * width, 0), eos, dtype=torch.long, device=x.device)
    done = torch.zeros(n * width, dtype=torch.bool, device=x.device)
    previous = torch.full((n * width,), model.sos, dtype=torch.long, device=x.device)
    for _ in range(steps):
        logits, state = model.step(previous, state, (h, keys))
        step_lp = logits.float().log_softmax(-1)  # (N * B, V), V = digits + end
        if lm is not None and weight:
            history = _histories(tokens, lm)
            step_lp = step_lp + weight * lm.histories_log_probs(history).to(step_lp)
        # a finished hypothesis only "emits" the end again, at no cost
        step_lp = torch.where(done[:, None], torch.full_like(step_lp, -math.inf), step_lp)
        step_lp[done, eos] = 0.0
        vocab = step_lp.shape[1]
        total = (score.reshape(-1, 1) + step_lp).reshape(n, width * vocab)
        score, pick = total.topk(width, dim=1)
        beam, symbol = pick // vocab, pick % vocab
        rows = (torch.arange(n, device=x.device)[:, None] * width + beam).reshape(-1)
        state, done = state[rows], done[rows]
        tokens = torch.cat([tokens[rows], symbol.reshape(-1, 1)], 1)
        done = done | (symbol.reshape(-1) == eos)
        previous = symbol.reshape(-1)
        if done.all():
            break
    score = torch.where(done.reshape(n, width), score, torch.full_like(score, -math.inf))
    best = score.argmax(1)
    lines = []
    for i, b in enumerate(best.tolist()):
        row = tokens[i * width + b].tolist()
        lines.append(row[: row.index(eos)] if eos in row else row)
    return lines


def _histories(tokens: torch.Tensor, lm: CharNGram) -> torch.Tensor:
    """(B, order - 1) LM histories of the emitted symbols (line starts where too short)."""
    k = lm.order - 1
    start = torch.full((len(tokens), k), lm.boundary, dtype=torch.long, device=tokens.device)
    return torch.cat([start, tokens], 1)[:, -k:] if k else start
