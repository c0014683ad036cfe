"""torch.distributed for ticket searches: the process group's facts and collectives
(:mod:`tickets.parallel`) and the combined per-sample statistics (:class:`DistributedStats`).

The public face of both; see ``docs/distributed.md``.
"""

from tickets.parallel import world, is_active, is_writer, init_from_env, ShardSampler, check_identical, broadcast_buffers, all_reduce_sum, shard_of, gather_predictions, mask_checksum
from tickets.prac.stats import DistributedStats

__all__ = [
    'world',
    'is_active',
    'is_writer',
    'init_from_env',
    'ShardSampler',
    'DistributedStats',
    'check_identical',
    'broadcast_buffers',
    'all_reduce_sum',
    'shard_of',
    'gather_predictions',
    'mask_checksum',
]
