"""The classifier stage: training classifiers (from named recipes) and evaluating them."""
