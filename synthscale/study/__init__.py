"""The study stage: the config, the plan of every job and output path."""
