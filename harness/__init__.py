"""SER benchmark harness: table spec → jobs → runs → results → report."""

__version__ = "0.1.0"
