import os
import sys

from populate.cli import operations
from populate.cli.main import main

code = main()
if operations.exit_without_teardown:
    # A stopped worker or scheduler has closed its connections and printed its summary; the
    # interpreter's teardown of torch and friends would add seconds to every SIGTERM.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
