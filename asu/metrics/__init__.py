"""Evaluation metrics. ``formulas`` holds the pure definitions of the field's reference framework
(open-unlearning; ../shared/notes/metrics.md), on plain numbers and arrays, checked against hand-computed values."""
