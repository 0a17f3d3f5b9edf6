"""open_clip's model-name grammar, as the workflow reads it: `local-dir:FOLDER` names a folder holding
open_clip_config.json and weights; any other name is one open_clip knows. Standard library only: the
config check, the Plan and the CLIP filter read it without importing open_clip (or torch)."""

from __future__ import annotations

LOCAL_DIR = "local-dir:"  # open_clip's model name for a folder with open_clip_config.json and weights


def local_dir(model: str) -> str | None:
    """The folder of an open_clip `local-dir:FOLDER` model name; None for any other name."""
    return model[len(LOCAL_DIR) :] if model.startswith(LOCAL_DIR) else None
