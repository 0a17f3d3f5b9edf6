"""The data stage: real datasets (digits, ImageFolder trees, WordNet class tables), shards and the training loader."""
