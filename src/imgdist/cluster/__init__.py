"""Talking to ipyparallel: the only package that imports it.

- `client`: a `Cluster` is a client of one controller: connecting, submitting work, outcomes;
- `identity`: engines by name (`label@host`) and whether their software matches the main's;
- `launch`: starting a controller and engines here (local, Slurm, MPI, ...);
- `lifetime`: stopping what was started here;
- `remote`: more engines for a cluster started here, local or over SSH;
- `connection`: connection files and the ports a controller takes.
"""

from imgdist.cluster.client import DEFAULT_CONNECT_TIMEOUT_S, Cluster
from imgdist.cluster.connection import (
    CONTROLLER_PORTS,
    DATA_ROUTE_PORTS,
    PORTS_NEEDED,
    check_connection_file,
    connection_ports,
    free_ports,
)
from imgdist.cluster.identity import DEFAULT_ANSWER_TIMEOUT_S, Software, Worker
from imgdist.cluster.launch import DEFAULT_START_TIMEOUT_S

__all__ = [
    "CONTROLLER_PORTS",
    "DATA_ROUTE_PORTS",
    "DEFAULT_ANSWER_TIMEOUT_S",
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_START_TIMEOUT_S",
    "PORTS_NEEDED",
    "Cluster",
    "Software",
    "Worker",
    "check_connection_file",
    "connection_ports",
    "free_ports",
]
