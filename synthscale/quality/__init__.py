"""The quality stage: the judge, image-quality metrics and filtering of synthetic sets."""
