import sys

# structlog's dev renderer imports rich whenever it is installed (it comes with the test
# extra only: import-linter, schemathesis) and so would load ~50 modules the daemon never
# uses: log lines and tracebacks are plain text. Mark it absent for this process.
sys.modules.setdefault("rich", None)  # type: ignore[arg-type]

from agent.cli import main  # noqa: E402

raise SystemExit(main())
