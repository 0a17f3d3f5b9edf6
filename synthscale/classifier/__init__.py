"""The classifier stage: training classifiers and evaluating them."""
