"""A random open_clip model saved as open_clip's Hub layout (config JSON + safetensors), built offline:
the CLIP scorer's tests and the CLIP filter's dry run load it as `local-dir:<folder>`."""
from __future__ import annotations

import json
from pathlib import Path

import torch


def tiny_open_clip(folder: Path) -> Path:
    """A random open_clip model saved as open_clip's Hub layout (config JSON + safetensors)."""
    import open_clip
    from safetensors.torch import save_file

    model_cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": model_cfg,
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    }))
    torch.manual_seed(0)
    model = open_clip.CLIP(**model_cfg)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "open_clip_model.safetensors")
    return folder
