"""Attention OCR, the character LM, beam search (CTC and attention) and the Markov lines."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from nettle.models import create_model
from nettle.models.attention_ocr import greedy_lines
from nettle.train.beam import attention_beam_search, ctc_beam_search
from nettle.train.char_lm import CharNGram
from nettle.train.ctc import decode
from nettle.train.datasets.digit_lines import DIGIT_CHAIN, PAD, make_digit_lines
from nettle.train.datasets.digits import digits_split
from nettle.train.decoding import decoding_report
from nettle.train.seq2seq import Seq2SeqMetric, Seq2SeqObjective, decoder_targets


def test_decoder_targets_put_the_end_after_the_digits():
    y = torch.tensor([[2, 4, 7, PAD, PAD], [4, 1, 2, 3, 9]])
    assert decoder_targets(y, eos=10).tolist() == [
        [4, 7, 10, PAD, PAD],
        [1, 2, 3, 9, 10],
    ]


def test_markov_lines_follow_the_chain():
    assert np.allclose(DIGIT_CHAIN.sum(1), 1.0)
    images, labels, _ = digits_split("train")
    lines = make_digit_lines(images, labels, 3000, seed=5, chain=DIGIT_CHAIN)
    counts = np.zeros((10, 10))
    for row in lines.y.tolist():
        digits = row[1 : 1 + row[0]]
        for a, b in itertools.pairwise(digits):
            counts[a, b] += 1
    freq = counts / counts.sum(1, keepdims=True)
    assert np.abs(freq - DIGIT_CHAIN).max() < 0.05
    # each digit's picture is an image of that digit
    for src, row in zip(lines.sources[:50].tolist(), lines.y[:50].tolist()):
        assert [int(labels[s]) for s in src[: row[0]]] == row[1 : 1 + row[0]]


def test_char_ngram_probabilities_by_hand():
    lm = CharNGram(order=2, vocab=3, k=0.5).fit([[0, 1], [0, 1, 2]])
    # after 0: counts {1: 2}; P(1 | 0) = (2 + 0.5) / (2 + 0.5 * 4)
    assert float(lm.log_prob([0], 1).exp()) == pytest.approx(2.5 / 4.0)
    # line start: counts {0: 2}; an unseen start: 0.5 / 4
    assert float(lm.log_prob([], 2).exp()) == pytest.approx(0.5 / 4.0)
    assert torch.allclose(lm.table.exp().sum(-1), torch.ones(4))
    # a whole line: P(0 | start) P(1 | 0) P(end | 1), end after 1 seen once of twice
    expected = math.log(2.5 / 4) + math.log(2.5 / 4) + math.log(1.5 / 4)
    assert lm.line_log_prob([0, 1]) == pytest.approx(expected, rel=1e-6)
    trigram = CharNGram(order=3, vocab=3).fit([[0, 1, 2]])
    assert trigram.history([2]) == (3, 2) and trigram.history([0, 1, 2]) == (1, 2)
    with pytest.raises(ValueError, match="labels must be in 0..2"):
        CharNGram(order=2, vocab=3).fit([[3]])


def test_ctc_prefix_beam_finds_the_most_probable_labelling_not_the_best_path():
    # two frames, P(blank) = 0.6, P(a) = 0.4: best path "blank blank" -> "" (0.36), but the
    # labelling "a" has paths aa, a-, -a: 0.16 + 0.24 + 0.24 = 0.64
    lp = torch.tensor([[0.6, 0.6], [0.4, 0.4]]).log()[None]  # (1, C=2, T=2)
    assert decode(lp) == [[]]
    assert ctc_beam_search(lp, width=4) == [[0]]


def test_lm_fusion_settles_an_ambiguous_character():
    # frame 0: digit 0 for sure; frame 1: digits 1 and 7 equally likely (classes 2 and 8)
    frames = torch.full((1, 11, 3), 1e-6)
    frames[0, 1, 0] = 1.0
    frames[0, 2, 1] = frames[0, 8, 1] = 0.5
    frames[0, 0, 2] = 1.0
    lp = (frames / frames.sum(1, keepdim=True)).log()
    lm = CharNGram(order=2, vocab=10).fit([[0, 7]] * 20 + [[0, 1]])
    assert ctc_beam_search(lp, width=8, lm=lm, weight=1.0) == [[0, 7]]
    lm_other = CharNGram(order=2, vocab=10).fit([[0, 1]] * 20 + [[0, 7]])
    assert ctc_beam_search(lp, width=8, lm=lm_other, weight=1.0) == [[0, 1]]


def _tiny_attention(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("attention-ocr", num_classes=10, in_channels=1, width=8, hidden=16).eval()


def test_attention_beam_of_width_one_is_greedy_and_wider_beams_score_higher():
    model = _tiny_attention()
    x = torch.rand(6, 1, 8, 84)
    with torch.no_grad():
        greedy = greedy_lines(model(x), model.eos)
    assert attention_beam_search(model, x, width=1) == greedy

    def score(lines):
        targets = decoder_targets(
            torch.tensor([[len(line), *line, *[PAD] * (8 - len(line))] for line in lines]),
            model.eos,
        )
        with torch.no_grad():
            lp = model(x, targets).log_softmax(1)
        keep = targets != PAD
        picked = lp.gather(1, targets.clamp(min=0)[:, None]).squeeze(1)
        return (picked * keep).sum(1)

    wide = attention_beam_search(model, x, width=8)
    assert (score(wide) >= score(greedy) - 1e-5).all()


def test_attention_ocr_learns_a_few_lines(one_thread):
    images, labels, _ = digits_split("train")
    lines = make_digit_lines(images, labels, 32, seed=1, max_digits=4, min_digits=3)
    model = _tiny_attention().train()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    objective = Seq2SeqObjective()
    from nettle.measure.timing import PhaseTimer

    timer, first = PhaseTimer(), None
    for _ in range(80):
        out = objective(model, lines.x, lines.y, timer)
        first = float(out.loss.detach()) if first is None else first
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    metric = Seq2SeqMetric()
    with torch.no_grad():
        metric.update(model(lines.x), lines.y)
    result = metric.compute()
    assert float(out.loss.detach()) < first / 4 and result["cer"] < 0.3


def test_decoding_report_of_a_ctc_model_counts_lines_and_characters():
    model = create_model("crnn", num_classes=10, in_channels=1, width=8, hidden=8).eval()
    images, labels, _ = digits_split("test")
    lines = make_digit_lines(images, labels, 10, seed=2)
    train_lines = [[1, 2, 3]] * 5
    report = decoding_report(model, lines.x, lines.y, train_lines, beam_width=4)
    assert report["lines"] == 10 and set(report) >= {"greedy", "beam", "beam_lm"}
    with torch.no_grad():
        greedy = decode(model(lines.x))
    refs = [row[1 : 1 + row[0]] for row in lines.y.tolist()]
    assert report["greedy"]["acc"] == sum(g == r for g, r in zip(greedy, refs)) / 10
    with pytest.raises(ValueError, match="text-line recogniser"):
        decoding_report(
            create_model("simple-cnn", num_classes=10, in_channels=1),
            lines.x[:, :, :, :8],
            lines.y,
            train_lines,
        )


def test_a_normalised_recogniser_is_trained_and_decoded_through_its_wrapper():
    torch.manual_seed(0)
    model = create_model(
        "attention-ocr", num_classes=10, in_channels=1, width=8, hidden=16, mean=(0.2,), std=(0.3,)
    ).eval()
    images, labels, _ = digits_split("test")
    lines = make_digit_lines(images, labels, 6, seed=3)
    from nettle.measure.timing import PhaseTimer

    out = Seq2SeqObjective()(model, lines.x, lines.y, PhaseTimer())
    assert out.logits.shape == (6, 11, 9) and torch.isfinite(out.loss)
    report = decoding_report(model, lines.x, lines.y, [[1, 2]], beam_width=1, lm_weight=0.0)
    with torch.no_grad():
        greedy = greedy_lines(model(lines.x), 10)
    refs = [row[1 : 1 + row[0]] for row in lines.y.tolist()]
    assert report["greedy"] == report["beam"]  # a beam of one is greedy
    assert report["greedy"]["acc"] == sum(g == r for g, r in zip(greedy, refs)) / 6


def test_markov_lines_statistics_match_the_info():
    from nettle.train.data import create_dataset
    from nettle.train.datasets.digit_lines import DIGIT_LINES_MARKOV_INFO

    x, y = create_dataset("digit-lines-markov", "train").tensors
    assert (len(x), tuple(y.shape[1:])) == (DIGIT_LINES_MARKOV_INFO.train_size, (9,))
    assert round(float(x.mean()), 4) == DIGIT_LINES_MARKOV_INFO.mean[0]
    assert round(float(x.std()), 4) == DIGIT_LINES_MARKOV_INFO.std[0]


def test_decoding_degraded_lines_is_seeded_and_reported_apart():
    model = create_model("crnn", num_classes=10, in_channels=1, width=8, hidden=8).eval()
    images, labels, _ = digits_split("test")
    lines = make_digit_lines(images, labels, 8, seed=4)
    clean = decoding_report(model, lines.x, lines.y, [[1, 2]], beam_width=2)
    assert "noisy" not in clean
    first = decoding_report(model, lines.x, lines.y, [[1, 2]], beam_width=2, noise_std=0.3, seed=1)
    again = decoding_report(model, lines.x, lines.y, [[1, 2]], beam_width=2, noise_std=0.3, seed=1)
    assert first["noisy"] == again["noisy"] and set(first["noisy"]) == {"greedy", "beam", "beam_lm"}
    assert {k: first[k] for k in ("greedy", "beam", "beam_lm")} == {
        k: clean[k] for k in ("greedy", "beam", "beam_lm")
    }
