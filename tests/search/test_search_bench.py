"""`bench.search.oracle_agreement`: the pass rate of an oracle that picks tau on a few test items."""

from __future__ import annotations

from asu.search.scores import ItemFigures
from bench.search import oracle_agreement
from pipelines.temperature_search import SearchConfig


def figures(rouge: list[float], entropy: list[float]) -> ItemFigures:
    n = len(rouge)
    return ItemFigures(rouge_l_recall=rouge, nll=[1.0] * n, token_entropy=entropy, repetition=[0.0] * n,
                       fluent=[True] * n)


BASE = figures([1.0] * 10, [1.0] * 10)


def test_oracle_always_passes_when_every_item_tells_the_same_story():
    grid = {2.0: (figures([0.5] * 10, [0.95] * 10), 1.0),  # admissible everywhere
            3.0: (figures([0.1] * 10, [0.5] * 10), 1.0)}  # breaks the entropy floor on every item
    result = oracle_agreement(BASE, 1.0, grid, SearchConfig(), validation_items=3, splits=50)
    assert result == {"validation_items": 3, "splits": 50, "pass_rate": 1.0}


def test_oracle_misses_when_the_floor_verdict_depends_on_the_items_drawn():
    # tau 3 forgets far more; its entropy is 1.0 on half the items and 0.8 on the other half, so its mean sits
    # exactly at the floor (0.9 x the base's 1.0). Drawing 3 of 10 items without replacement: with >= 2 good ones
    # the draw admits tau 3, and the 7 left hold <= 3 good ones (mean <= 0.886: tau 3 broken there); with <= 1
    # good one the draw rejects tau 3, and the 7 left hold >= 4 (mean >= 0.914: tau 3 best there). Every split
    # misses, by hand.
    entropy = [1.0, 0.8] * 5
    grid = {2.0: (figures([0.5] * 10, [0.95] * 10), 1.0), 3.0: (figures([0.1] * 10, entropy), 1.0)}
    assert oracle_agreement(BASE, 1.0, grid, SearchConfig(), validation_items=3, splits=50)["pass_rate"] == 0.0
