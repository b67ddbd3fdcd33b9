"""Exit statuses of filedrop's commands: the CLI, its workflow steps and the Spark job. Pure.

What a caller does with them: Argo retries a workflow step that exited 3 or 75
(:data:`filedrop.analytics.workflows.RETRYABLE_EXIT_CODES`), cron and CI notice anything but 0.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    #: done: loaded or skipped, built, written
    OK = 0
    #: failed, and a retry would fail the same way (a file's data, a dbt model or test)
    FAILED = 1
    #: bad arguments or input (an unknown route, a missing file, a bad date), or a warehouse that cannot
    #: be used as configured; also what click exits with on a usage error
    USAGE = 2
    #: the warehouse connection was lost in the middle of a command: run it again
    WAREHOUSE_LOST = 3
    #: ``EX_TEMPFAIL`` of sysexits.h: the warehouse, S3 or a server could not be reached; a retry may help
    TEMPFAIL = 75
