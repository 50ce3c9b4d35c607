"""InceptionV3 fine-tuning, the paper's best system: the transfer objective with the InceptionV3 backbone.

Every experiment of the paper is a point of this family's space (search_spaces/inception*.yaml):
- freeze everything but a new softmax head: mode=freeze_all_but_head (21,819,176 params, 16,392 trainable, 8 classes);
- unfreeze blocks progressively: mode=unfreeze_blocks, unfreeze_blocks=k of the 11 Inception blocks (mixed0 ... mixed10),
  counted from the top (or from the bottom with unfreeze_from=bottom);
- cut the network after a block and add GAP + softmax: mode=cut_after, cut_after=mixed5 gives 5,144,808 params;
- the 400-image tiny set with augmentation: dataset=tiny (50 per class), flip / rotation / shift / shear / zoom;
- random search over optimizer, lr, momentum and activation (the activation swap breaks the pretrained features,
  as it did in the paper).

Weights: "imagenet" makes Keras download them on first use (online only; offline, the trial fails with a message that
says which file to fetch and how to pass it), a local .h5 file of InceptionV3 without its top, or "none".
"""
from __future__ import annotations

from typing import Any

from bench.objectives.transfer import Transfer


class InceptionV3(Transfer):
    name = "inception"
    # the contract checks' trial (bench.checks): seconds, 1 epoch, small inputs
    quick_params = {"weights": "none", "input_size": 75, "epochs": 1, "batch_size": 16}
    defaults: dict[str, Any] = {**Transfer.defaults, "backbone": "inceptionv3", "input_size": 299}
