"""The CLIP stage: training CLIP models through open_clip_train and evaluating them zero-shot."""
