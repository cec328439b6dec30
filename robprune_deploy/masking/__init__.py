"""Fixed weight masks applied with :mod:`torch.nn.utils.parametrize`.

A masked parameter keeps its dense shape; ``module.weight`` evaluates to ``original * mask`` so that
training updates the original weights while the pruned entries stay exactly zero in every forward.
Folding (:func:`fold_masks`) writes ``original * mask`` back as a plain parameter.
"""

from robprune_deploy.masking.fixed import FixedMask, apply_masks, fold_masks, has_masks, masks_of, remove_masks

__all__ = ["FixedMask", "apply_masks", "fold_masks", "has_masks", "masks_of", "remove_masks"]
