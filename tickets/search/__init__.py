"""The search: option groups, checks, the run folder and its identity, :class:`Round`,
:class:`TicketSearch` and the :func:`prune` driver that runs it with the engine.
"""

from tickets.search.options import RunInterrupted, EarlyBird, Pruning, PrACOptions, Runtime, parse_checkpoint_every, resolve_options
from tickets.search.identity import describe_optimizer
from tickets.search.run_folder import STATE_FORMAT, STATE_VERSION, METRICS_FILE, load_prac_sets, ROUND0_FORMAT, ROUND0_FILE
from tickets.search.lock import RunFolderLocked
from tickets.search.round import Round
from tickets.search.ticket_search import TicketSearch
from tickets.search.driver import prune
from tickets.search.accounting import Savings, iteration_savings

__all__ = [
    'RunInterrupted',
    'EarlyBird',
    'Pruning',
    'PrACOptions',
    'Runtime',
    'parse_checkpoint_every',
    'resolve_options',
    'describe_optimizer',
    'STATE_FORMAT',
    'STATE_VERSION',
    'METRICS_FILE',
    'load_prac_sets',
    'ROUND0_FORMAT',
    'ROUND0_FILE',
    'RunFolderLocked',
    'Round',
    'TicketSearch',
    'prune',
    'Savings',
    'iteration_savings',
]
