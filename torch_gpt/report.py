"""python -m torch_gpt.report: the same command as python -m numpy_gpt.report, under the name the
torch trainer's users know: a training run's figures, as markdown, from its log.jsonl."""
from numpy_gpt.machinery import report
from numpy_gpt.machinery.cli import run_cli

PROG = "python -m torch_gpt.report"


def parser():
    return report.parser(PROG)


def main(argv=None):
    return report.main(argv, prog=PROG)


if __name__ == "__main__":
    run_cli(main)
