"""The feature memory of a GMM built for inference: nothing.

Inference reads only the means and stds; the memory bank (GBs for ADE20K) is training state.
`InferenceMemory` takes the memory's place in a GMMPredictor built with memory_layout "none"
(MODEL.GMM.MEMORY_LAYOUT "none", which --eval-only and the inference tools use): it allocates
nothing, and loading a checkpoint skips the memory's entries without reading them (with a
memory-mapped checkpoint the bank's pages are then never touched). Pushing or asking for
statistics is an error.
"""

from torch import nn

__all__ = ["InferenceMemory"]


class InferenceMemory(nn.Module):
    layout = "none"

    def __init__(self, num_groups: int, capacity: int, dim: int):
        super().__init__()
        self.num_groups, self.capacity, self.dim = num_groups, capacity, dim

    def _refuse(self, *args, **kwargs):
        raise RuntimeError(
            "This GMM was built for inference (MODEL.GMM.MEMORY_LAYOUT 'none'): it has no "
            "memory bank to push to or to read statistics from. Train with MEMORY_LAYOUT "
            "'auto', 'sharded' or 'replicated'."
        )

    push = statistics = local_statistics = check_trainable = _refuse

    def reset_batch_statistics(self):
        pass

    def replicated_state(self, include_bank: bool = True):
        return []

    def checkpoint_shapes(self):
        return {}

    @staticmethod
    def entry_dims():
        return {}  # its state_dict() has no entries: a checkpoint's memory entries are skipped

    def gather_for_checkpoint(self):
        pass

    def release_checkpoint(self):
        pass

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        pass  # the memory's entries (memory.MEMORY_STATE_NAMES) are skipped: neither copied nor read

    def extra_repr(self):
        return f"groups={self.num_groups}, capacity={self.capacity}, dim={self.dim}, layout=none (no bank)"
