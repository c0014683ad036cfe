"""Integrations of :class:`tickets.TicketSearch` with training frameworks.

* :mod:`tickets.integrations.lightning`: a PyTorch Lightning callback
  (``pip install 'torch-tickets[lightning]'``).
"""
