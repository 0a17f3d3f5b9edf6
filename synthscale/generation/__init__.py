"""The generation stage: generator pipelines, the tiny generator, fine-tuning and sampling synthetic images."""
