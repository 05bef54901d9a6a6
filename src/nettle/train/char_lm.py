"""A character n-gram language model for shallow fusion in beam search.

Counts of n-grams over the training label sequences, each padded with `n - 1` line starts in
front and one line end behind, with add-`k` smoothing (Chen & Goodman 1999 compare it with
better smoothing; for ten digits and thousands of lines it is enough):
`P(c | h) = (count(h, c) + k) / (count(h) + k * (V + 1))` over the `V` characters and the end.
The probabilities live in one dense table of shape `(V + 1,) * n` indexed by the history
(`V` = the line start) and the next symbol (`V` = the line end), so scoring a batch of
hypotheses is one gather.

Shallow fusion (Gulcehre et al. 2015, "On using monolingual corpora in neural machine
translation") adds `weight * log P_LM` to the recogniser's log-probability of every emitted
character and of the line end (`nettle.train.beam`).

Example:
    >>> lm = CharNGram(order=2, vocab=3).fit([[0, 1], [0, 1, 2]])
    >>> round(float(lm.log_prob([0], 1).exp()), 3)
    0.875
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

__all__ = ["CharNGram"]


class CharNGram:
    """An add-k smoothed character n-gram model over `vocab` symbols (see the module docstring).

    Args:
        order: n (2: bigrams; at least 1).
        vocab: number of characters (labels 0..vocab-1).
        k: additive smoothing count.
    """

    def __init__(self, order: int = 2, vocab: int = 10, k: float = 0.1) -> None:
        if order < 1 or vocab < 1 or k <= 0:
            raise ValueError(
                f"CharNGram needs order >= 1, vocab >= 1, k > 0; got {order}, {vocab}, {k}"
            )
        self.order, self.vocab, self.k = order, vocab, k
        self.table = torch.full((vocab + 1,) * order, -torch.log(torch.tensor(vocab + 1.0)))

    @property
    def boundary(self) -> int:
        """The index of the line start (in histories) and of the line end (as next symbol)."""
        return self.vocab

    def fit(self, lines: Iterable[Sequence[int]]) -> CharNGram:
        """Count the n-grams of `lines` (sequences of labels) and fill the table; returns self."""
        counts = torch.zeros((self.vocab + 1,) * self.order, dtype=torch.float64)
        for line in lines:
            if any(not 0 <= c < self.vocab for c in line):
                raise ValueError(f"labels must be in 0..{self.vocab - 1}, got {list(line)}")
            padded = [self.boundary] * (self.order - 1) + list(line) + [self.boundary]
            for i in range(self.order - 1, len(padded)):
                counts[tuple(padded[i - self.order + 1 : i + 1])] += 1
        probs = (counts + self.k) / (counts.sum(-1, keepdim=True) + self.k * (self.vocab + 1))
        self.table = probs.log().float()
        return self

    def history(self, prefix: Sequence[int]) -> tuple[int, ...]:
        """The last `order - 1` symbols of `prefix`, line starts in front where it is short."""
        h = [self.boundary] * (self.order - 1) + list(prefix)
        return tuple(h[len(h) - (self.order - 1) :]) if self.order > 1 else ()

    def log_prob(self, prefix: Sequence[int], symbol: int | None = None) -> torch.Tensor:
        """log P(symbol | prefix); `symbol=None` gives the (vocab + 1,) row (last: line end)."""
        row = self.table[self.history(prefix)]
        return row if symbol is None else row[symbol]

    def histories_log_probs(self, histories: torch.Tensor) -> torch.Tensor:
        """(B, vocab + 1) log-probabilities of the next symbol for (B, order - 1) histories."""
        if self.order == 1:
            return self.table.expand(len(histories), -1)
        return self.table[tuple(histories.long().T)]

    def line_log_prob(self, line: Sequence[int]) -> float:
        """log P of a whole line, its end included."""
        total = sum(float(self.log_prob(line[:i], c)) for i, c in enumerate(line))
        return total + float(self.log_prob(line, self.boundary))
