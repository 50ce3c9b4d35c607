"""Transfer learning: pretrained backbones, their blocks, and the feature cache of frozen parts."""
