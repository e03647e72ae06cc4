"""One exception type for every user-facing failure.

Its message is a single line that names the file or key at fault and what to do; the workflow
scripts print it as ``error: <message>`` and exit with status 1.
"""


class InstanceSearchError(Exception):
    """A failure the user can fix (bad input, bad parameter, missing file)."""
