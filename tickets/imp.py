"""The 0.2 import path of these names, kept so that existing imports work; their code
lives in :mod:`tickets.search.accounting`, :mod:`tickets.search.driver`, :mod:`tickets.search.options`, :mod:`tickets.search.run_folder`, :mod:`tickets.ticket.ticket`.
"""

from tickets.search.driver import prune
from tickets.ticket.ticket import retrain
from tickets.search.options import EarlyBird, RunInterrupted
from tickets.search.accounting import iteration_savings, Savings
from tickets.search.run_folder import load_prac_sets

__all__ = [
    'prune',
    'retrain',
    'EarlyBird',
    'iteration_savings',
    'Savings',
    'load_prac_sets',
    'RunInterrupted',
]
