"""The local stack: every server Sluiceway talks to, run for real on 127.0.0.1.

One module per service (postgres, mariadb, kafka, seaweedfs, fakesnow, bigquery) on the
`Service` base; `Stack` starts, stops and reports them; ``sluiceway stack`` is its CLI.
"""

from stack.manager import SERVICES, Stack
from stack.service import Service, ServiceStatus

__all__ = ["SERVICES", "Service", "ServiceStatus", "Stack"]
