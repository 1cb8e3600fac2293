"""`python -m servicenow_worker`, the same as the `servicenow-worker` console script."""

from servicenow_worker.cli import main

main()
