"""Whether a samconfig.toml environment deploys with the Klaviyo key's secret ARN.

    python3 -m devtools.deploy_check ENV            # before `make deploy ENV=...`
    python3 -m devtools.deploy_check ENV --guided   # after a guided deploy: was it saved?

``KlaviyoApiKeySecretArn`` has no default: the first deploy of an environment is guided
(``make deploy ENV=<env> GUIDED=1``), asks for it and saves it under that environment. Without
it CloudFormation refuses the stack only after the build and the upload; this says so first,
and says what to run. Standard library only: deploying needs no virtualenv.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tomllib
from pathlib import Path
from typing import Any

SAMCONFIG = Path(__file__).resolve().parents[1] / "samconfig.toml"
SECRET_PARAMETER = "KlaviyoApiKeySecretArn"


def saved_parameters(config: dict[str, Any], environment: str) -> dict[str, str]:
    """The parameter overrides ``sam deploy --config-env <environment>`` reads."""
    found: dict[str, str] = {}
    for command in ("global", "deploy"):  # deploy's own settings win over global ones
        overrides = config.get(environment, {}).get(command, {}).get("parameters", {})
        value = overrides.get("parameter_overrides", "")
        items = shlex.split(value) if isinstance(value, str) else [str(v) for v in value]
        found.update(item.split("=", 1) for item in items if "=" in item)
    return found


def problem(config: dict[str, Any], environment: str, after_guided: bool = False) -> str | None:
    """Why the environment would deploy without the secret's ARN, or None."""
    if environment in config and saved_parameters(config, environment).get(SECRET_PARAMETER):
        return None
    if after_guided:
        return (
            f"the guided deploy did not save {SECRET_PARAMETER} for environment "
            f"'{environment}': run it again and answer Y to 'Save arguments to configuration "
            f"file', keeping 'SAM configuration environment' at '{environment}'"
        )
    if environment in config:
        missing = f"samconfig.toml has no {SECRET_PARAMETER} for environment '{environment}'"
    else:
        missing = f"samconfig.toml has no environment '{environment}'"
    return (
        f"{missing}: deploy it the first time with `make deploy ENV={environment} GUIDED=1`, "
        "which asks for the secret's ARN and saves it (docs/deploying.md, section 4)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m devtools.deploy_check")
    parser.add_argument("environment")
    parser.add_argument("--guided", action="store_true", help="check after a guided deploy")
    parser.add_argument("--config-file", type=Path, default=SAMCONFIG)
    args = parser.parse_args(argv)
    config = tomllib.loads(args.config_file.read_text("utf-8"))
    found = problem(config, args.environment, after_guided=args.guided)
    if found is None:
        return 0
    print(f"deploy: {found}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
