class HarnessError(Exception):
    """A user-facing problem: the CLI prints its message on one line, without a traceback.

    The message names the problem and the fix.
    """
