"""The worker process: a gRPC server hosting one adapter.

Started by the pool as ``python -m snakepit.worker ...``; users write adapters
(:class:`snakepit.Adapter`) and never start workers by hand.
"""
from .adapter import Adapter, Cancelled, RequestContext, command, current_request

__all__ = ["Adapter", "Cancelled", "RequestContext", "command", "current_request"]
