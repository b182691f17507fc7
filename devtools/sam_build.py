"""``make build``: ``sam build`` with its output made right for this project.

    python -m devtools.sam_build [--next "make deploy ENV=dev"] -- <sam> build ...

The functions have no requirements.txt of their own (their dependencies are the shared layer),
so SAM warns once per function that it found none: those lines are dropped. SAM's closing
"Commands you can use next" suggests ``sam deploy --guided``; here deploying is ``make deploy``
(it checks the environment first and saves the secret's ARN), so that is what is suggested.
The command's exit status is kept.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterable, Iterator

NO_REQUIREMENTS = "requirements.txt file not found"
SAMS_NEXT_STEPS = "Commands you can use next"


def shown(lines: Iterable[str]) -> Iterator[str]:
    """The lines of SAM's output to show: without the warnings and SAM's next steps."""
    in_next_steps = False
    for line in lines:
        if NO_REQUIREMENTS in line:
            continue
        if line.strip().startswith(SAMS_NEXT_STEPS):
            in_next_steps = True
            continue
        if in_next_steps:
            if line.strip().startswith(("=", "[*]")) or not line.strip():
                continue
            in_next_steps = False
        yield line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.sam_build", description=__doc__)
    parser.add_argument("--next", help="the next step to suggest once the build succeeds")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the sam command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the sam command after --")
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    assert process.stdout is not None
    for line in shown(process.stdout):
        sys.stdout.write(line)
        sys.stdout.flush()
    status = process.wait()
    if status == 0 and args.next:
        print(f"Next: {args.next}")
    return status


if __name__ == "__main__":
    sys.exit(main())
