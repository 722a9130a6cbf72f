"""The ``connpool`` command line (``connpool ...`` or ``python -m connpool ...``).

``connpool bench`` measures a pool on every installed backend, each in a
process of its own, against an embedded echo server or a real server;
``connpool size`` (or ``connpool bench --sweep``) measures several pool sizes
and recommends one.  The modules:

``_main``     argument parsing, the commands, the reports' layout
``_runner``   the parent process: one child process per backend, progress bar, echo server
``_child``    one backend's process: monkey-patches first, runs the workload, prints JSON
``_targets``  ``tcp://``, ``redis://`` and ``postgresql://`` targets: parsing, probing, workloads
``_report``   tables, the size recommendation, the plot
``_stats``    percentiles and Jain's fairness index
"""

from __future__ import annotations

from ._main import build_parser, main

__all__ = ["build_parser", "main"]
