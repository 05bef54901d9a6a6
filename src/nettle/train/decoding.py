"""Line accuracy and character error rate of a text-line recogniser for three decodings:
greedy, beam search, and beam search with a character language model (shallow fusion).

Works for CTC models (`crnn`: outputs (N, C, T), class 0 the blank) and the attention model
(`attention-ocr`). The language model is a `CharNGram` fitted on the training lines' labels
(never the test lines), so it knows the training distribution of digit sequences; on
`digit-lines-markov` that distribution has structure, on `digit-lines` it is uniform.
This is the `decode` evaluation stage of a run (`evaluate.decode`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from nettle.models.attention_ocr import AttentionOCR, greedy_lines, split_recogniser
from nettle.models.factory import unwrap
from nettle.nn.modes import eval_mode
from nettle.train.beam import attention_beam_search, ctc_beam_search
from nettle.train.char_lm import CharNGram
from nettle.train.ctc import character_error_rate, decode
from nettle.train.seq2seq import reference_lines

__all__ = ["MODES", "decoding_report"]

MODES = ("greedy", "beam", "beam_lm")


def _read(
    model: nn.Module, x: torch.Tensor, width: int, lm: CharNGram, weight: float
) -> dict[str, list[list[int]]]:
    if isinstance(unwrap(model)[1], AttentionOCR):
        prepare, net = split_recogniser(model)
        x = prepare(x)
        return {
            "greedy": greedy_lines(net(x), net.eos),
            "beam": attention_beam_search(net, x, width),
            "beam_lm": attention_beam_search(net, x, width, lm, weight),
        }
    out = model(x)
    if out.dim() != 3:
        raise ValueError(
            f"decoding needs a text-line recogniser (crnn, attention-ocr); {type(model).__name__} "
            f"gives outputs of shape {tuple(out.shape)}"
        )
    return {
        "greedy": decode(out),
        "beam": ctc_beam_search(out, width),
        "beam_lm": ctc_beam_search(out, width, lm, weight),
    }


@torch.no_grad()
def decoding_report(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    train_lines: Sequence[Sequence[int]],
    beam_width: int = 8,
    lm_order: int = 2,
    lm_weight: float = 0.5,
    lm_k: float = 0.1,
    noise_std: float = 0.0,
    seed: int = 0,
    batch_size: int = 250,
) -> dict[str, Any]:
    """{mode: {"acc", "cer"}} for greedy, beam and beam + LM decoding of lines `x`, `y`.

    Args:
        model: a CTC recogniser or an `AttentionOCR` (put in eval mode here).
        x: line images (N, C, H, W); y: label rows (N, 1 + S) (`digit-lines` layout).
        train_lines: the training lines' labels, for the language model.
        beam_width: hypotheses kept per line.
        lm_order: n of the character n-gram model; lm_weight: its fusion weight;
        lm_k: its additive smoothing.
        noise_std: above 0, also decode the lines degraded by Gaussian pixel noise of this
            standard deviation (drawn with `seed`, clipped to [0, 1]), reported under "noisy":
            a language model earns its keep where the image is ambiguous.
        seed: seed of that noise.
        batch_size: lines decoded at once.
    """
    vocab = getattr(unwrap(model)[1], "num_classes", 10)
    lm = CharNGram(lm_order, vocab, lm_k).fit(train_lines)
    refs = reference_lines(y)
    with eval_mode(model):
        report: dict[str, Any] = _scores(model, x, refs, beam_width, lm, lm_weight, batch_size)
        if noise_std > 0:
            g = torch.Generator().manual_seed(seed)
            noisy = (x + noise_std * torch.randn(x.shape, generator=g)).clamp(0, 1)
            report["noisy"] = _scores(model, noisy, refs, beam_width, lm, lm_weight, batch_size)
    report["lines"] = len(refs)
    report["lm_perplexity"] = _perplexity(lm, refs)
    return report


def _scores(
    model: nn.Module,
    x: torch.Tensor,
    refs: list[list[int]],
    width: int,
    lm: CharNGram,
    weight: float,
    batch_size: int,
) -> dict[str, dict[str, float]]:
    """{mode: {"acc", "cer"}} of the three decodings of `x` against `refs`."""
    device = next(model.parameters()).device
    read: dict[str, list[list[int]]] = {m: [] for m in MODES}
    for i in range(0, len(x), batch_size):
        batch = x[i : i + batch_size].to(device)
        for mode, lines in _read(model, batch, width, lm, weight).items():
            read[mode] += lines
    return {
        mode: {
            "acc": sum(p == r for p, r in zip(lines, refs)) / max(len(refs), 1),
            "cer": character_error_rate(lines, refs),
        }
        for mode, lines in read.items()
    }


def _perplexity(lm: CharNGram, lines: list[list[int]]) -> float:
    """Per-symbol perplexity (ends included) of the LM on the evaluated lines' labels."""
    total = sum(lm.line_log_prob(line) for line in lines)
    symbols = sum(len(line) + 1 for line in lines)
    return float(torch.tensor(-total / max(symbols, 1)).exp())
