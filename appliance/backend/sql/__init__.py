"""The SQL toolkit third-party stores build on: statements as values, the two drivers
that run them, the dialects, and ``SqlBackend`` with every operation written once."""

from .backend import SqlBackend
from .statements import (
                         POSTGRES,
                         SQLITE,
                         Dialect,
                         Op,
                         OpFactory,
                         Stmt,
                         all_,
                         exec_,
                         later,
                         notify,
                         one,
                         run_async,
                         run_blocking,
)

__all__ = ["POSTGRES", "SQLITE", "Dialect", "Op", "OpFactory", "SqlBackend", "Stmt", "all_",
           "exec_", "later", "notify", "one", "run_async", "run_blocking"]
