"""The prompts stage: fixed prompt strategies and prompts made by language models and captioners."""
