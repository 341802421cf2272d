"""Training figures (plots/training.py): the traces each draws, from made-up numbers."""

import numpy as np
import pytest

from explorer.plots import training


def test_loss_curves_draw_training_and_held_out():
    fig = training.loss_curves([1, 2, 3], [7, 6, 5.5], [0, 3], [7, 5.8], x_title="tokens seen", title="tiny")
    assert [t.name for t in fig.data] == ["training batch", "held-out text"]
    assert list(fig.data[1].y) == [7, 5.8] and fig.layout.xaxis.title.text == "tokens seen"
    with pytest.raises(ValueError):
        training.loss_curves([1, 2], [7], [0], [7])


def test_head_scores_one_line_per_head():
    scores = np.random.default_rng(0).random((3, 2, 4))
    fig = training.head_score_curves([0, 10, 20], scores, "induction score")
    assert len(fig.data) == 8 and fig.data[5].name == "L1 H1" and list(fig.data[5].y) == list(scores[:, 1, 1])
    with pytest.raises(ValueError):
        training.head_score_curves([0, 10], scores, "x")


def test_scaling_plot_has_runs_fit_and_live_run():
    fig = training.scaling_plot([1e3, 1e4, 1e5], [6, 5, 4.5], ["a", "b", "<b>c</b>"], [1e3, 1e5], [6.1, 4.4],
                                "L = 9 x^-0.1", live=(3e4, 4.9))  # fmt: skip
    assert [t.name for t in fig.data][1:] == ["L = 9 x^-0.1", "your run"]
    assert fig.layout.xaxis.type == "log" and "<b>" not in fig.data[0].text[2]
    assert fig.data[2].x == (3e4,)


def test_preference_curves_put_the_margin_on_its_own_axis():
    fig = training.preference_curves([1, 2], [-30, -31], [-30, -40], [0, 0.9])
    assert len(fig.data) == 3 and fig.data[2].yaxis == "y2" and list(fig.data[1].y) == [-30, -40]
