"""Attention OCR: the CRNN's encoder and a GRU decoder with additive attention (Bahdanau, Cho &
Bengio 2015, "Neural machine translation by jointly learning to align and translate";
as a text recogniser: Shi et al. 2016, "Robust scene text recognition with automatic
rectification", whose recogniser is this encoder-decoder).

Encoder: the conv stack and BiLSTM of `nettle.models.crnn` (width 32, 64 LSTM units each way):
one 128-d feature per pair of image columns. Decoder: at step `t`, attention weights
`a = softmax(v . tanh(W s + U h_j))` over the encoder steps `h_j`, the context `c = sum a_j h_j`,
then a GRU cell on `[embed(previous symbol), c]` and a linear layer on `[s, c]` to the scores of
the next symbol: the 10 digits or the end of the line (`EOS`). The first previous symbol is
`SOS`.

`forward(x, targets)` with targets (N, L) runs teacher forcing (the true previous symbol at
every step, Williams & Zipser 1989) and returns scores (N, V, L); `forward(x)` decodes greedily
for `max_steps` steps and returns the scores of the chosen path (N, V, max_steps). `encode` and
`step` expose the decoder one step at a time for beam search (`nettle.train.beam`).
Labels: symbols 0..9 are digits, `EOS = num_classes`, `SOS = num_classes + 1` (input only).
For 8x84 lines and 10 classes: 339,819 parameters.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from nettle.models.crnn import _stage
from nettle.models.factory import MODELS, unwrap
from nettle.nn.substitutes import get_conv_class

__all__ = ["AttentionOCR", "greedy_lines", "split_recogniser"]


class AttentionOCR(nn.Module):
    """Encoder-decoder text-line recogniser (see the module docstring).

    Args:
        num_classes: characters (the decoder adds the end symbol).
        in_channels: image channels.
        conv: substitute spec for the second and third convolutions.
        width: channels of the first conv (doubled twice).
        hidden: encoder LSTM units per direction; the decoder has `2 * hidden` units.
        embed: size of the previous-symbol embedding.
        max_steps: decoding steps without targets (the longest line plus its end).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        conv: str | None = None,
        width: int = 32,
        hidden: int = 64,
        embed: int = 32,
        max_steps: int = 9,
    ) -> None:
        super().__init__()
        sub = get_conv_class(conv)
        self.num_classes, self.max_steps = num_classes, max_steps
        self.eos, self.sos = num_classes, num_classes + 1
        self.stem = _stage(get_conv_class(None), in_channels, width, (2, 2))
        self.stage1 = _stage(sub, width, 2 * width, (2, 1))
        self.stage2 = _stage(sub, 2 * width, 4 * width, (2, 1))
        self.collapse = nn.AdaptiveAvgPool2d((1, None))
        self.rnn = nn.LSTM(4 * width, hidden, bidirectional=True, batch_first=True)
        d = 2 * hidden
        self.embed = nn.Embedding(num_classes + 2, embed)
        self.att_state = nn.Linear(d, d, bias=False)
        self.att_keys = nn.Linear(d, d)
        self.att_v = nn.Linear(d, 1, bias=False)
        self.cell = nn.GRUCell(embed + d, d)
        self.out = nn.Linear(2 * d, num_classes + 1)
        self.at_layers = ["stage1", "stage2"]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(encoder steps (N, T, D), their attention keys (N, T, D), first state (N, D))."""
        f = self.collapse(self.stage2(self.stage1(self.stem(x)))).squeeze(2)  # (N, C, T)
        h, _ = self.rnn(f.transpose(1, 2))
        return h, self.att_keys(h), h.mean(1)

    def step(
        self,
        previous: torch.Tensor,
        state: torch.Tensor,
        memory: tuple[torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores of the next symbol (B, V), new state (B, D)) from previous symbols (B,)."""
        h, keys = memory
        energy = self.att_v(torch.tanh(keys + self.att_state(state)[:, None])).squeeze(-1)
        context = torch.bmm(energy.softmax(-1)[:, None], h).squeeze(1)
        state = self.cell(torch.cat([self.embed(previous), context], -1), state)
        return self.out(torch.cat([state, context], -1)), state

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (N, num_classes + 1, L): teacher-forced on `targets` (N, L), else greedy."""
        h, keys, state = self.encode(x)
        steps = self.max_steps if targets is None else targets.shape[1]
        previous = torch.full((len(x),), self.sos, dtype=torch.long, device=x.device)
        scores = []
        for t in range(steps):
            logits, state = self.step(previous, state, (h, keys))
            scores.append(logits)
            chosen = logits.argmax(-1) if targets is None else targets[:, t]
            previous = chosen.clamp(min=0)  # padding (-1) after the end feeds symbol 0
        return torch.stack(scores, -1)


def split_recogniser(
    model: nn.Module,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], AttentionOCR]:
    """(the input modules of `create_model`'s wrapper as one function, the `AttentionOCR`
    inside), so that a caller can pass targets or decode step by step.

    Raises:
        TypeError: `model` is not an attention recogniser.
    """
    _, net = unwrap(model)
    if not isinstance(net, AttentionOCR):
        raise TypeError(f"{type(net).__name__} is not an attention recogniser (attention-ocr)")
    front = [m for name, m in model.named_children() if name != "net"] if net is not model else []

    def prepare(x: torch.Tensor) -> torch.Tensor:
        for m in front:
            x = m(x)
        return x

    return prepare, net


def greedy_lines(scores: torch.Tensor, eos: int) -> list[list[int]]:
    """The labels of each greedy path (N, V, L) up to its first end symbol."""
    lines = []
    for row in scores.argmax(1).tolist():
        lines.append(row[: row.index(eos)] if eos in row else row)
    return lines


@MODELS.register("attention-ocr")
def attention_ocr(
    num_classes: int = 10,
    in_channels: int = 1,
    conv: str | None = None,
    width: int = 32,
    hidden: int = 64,
) -> AttentionOCR:
    """The attention text-line recogniser (see `AttentionOCR`)."""
    return AttentionOCR(num_classes, in_channels, conv, width, hidden)
