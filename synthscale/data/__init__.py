"""The data stage: real datasets (digits, ImageFolder trees, WordNet class tables), shards, the training
loader and its image transforms."""
