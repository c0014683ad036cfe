"""The ticket: masks and rewind weights as a value (:class:`Ticket`), its file format, and
retraining it with the engine.
"""

from tickets.ticket.file import FORMAT, VERSION, FILE_VERSION, atomic_save, remove_stale_temporaries, pack_mask, unpack_mask
from tickets.ticket.ticket import Ticket, SparsityReport, sparsity_report, retrain

__all__ = [
    'FORMAT',
    'VERSION',
    'FILE_VERSION',
    'atomic_save',
    'remove_stale_temporaries',
    'pack_mask',
    'unpack_mask',
    'Ticket',
    'SparsityReport',
    'sparsity_report',
    'retrain',
]
