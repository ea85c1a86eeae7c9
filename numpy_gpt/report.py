"""python -m numpy_gpt.report: a training run's figures, as markdown, from its log.jsonl
(numpy_gpt.machinery.report)."""
from .machinery.cli import run_cli
from .machinery.report import main, parser  # noqa: F401  (parser: for --help and the tests)

if __name__ == "__main__":
    run_cli(main)
