"""Choosing a launcher, before anything starts: missing programs and packages, unknown names."""

from __future__ import annotations

import shutil
import sys

import pytest

from imgdist.errors import ParameterError
from imgdist.launchers import check_launcher

MPI = "" if shutil.which("mpiexec") else "mpiexec is not installed (openmpi-bin)"


def test_a_launcher_whose_program_is_missing(monkeypatch, tmp_path):
    """No sbatch on this machine's PATH: say so, and what to install."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ParameterError, match=r"the slurm launcher needs `sbatch`, which is not on"):
        check_launcher("slurm", 2)


def test_mpi_without_mpi4py(monkeypatch):
    """MPI engines without mpi4py would all die at start: refused first, saying what to install."""
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # how Python marks a module not importable
    if MPI:
        pytest.skip(MPI)
    with pytest.raises(
        ParameterError, match=r"MPI engines need mpi4py .* `pip install 'imgdist\[mpi\]'`"
    ):
        check_launcher("mpi", 2)


def test_unknown_launcher():
    """A launcher name ipyparallel has no launcher for lists the ones there are."""
    with pytest.raises(
        ParameterError, match="launcher 'condor' is unknown; choose one of local, slurm"
    ):
        check_launcher("condor", 2)
