"""CLIP's input normalisation and its pretrained logit scale, shared by the CLIP-based presets."""
import math

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# ln(100): a pretrained CLIP's logit_scale sits at its clamp, exp(s) = 100 (pass the model's own
# ``logit_scale.item()`` for its exact float32 value).
CLIP_LOGIT_SCALE = math.log(100.0)
