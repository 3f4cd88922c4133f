"""Print ``name==lowest`` for each named dependency: the lower bound that
pyproject.toml gives it (in the dependencies or any extra)."""

import re
import sys
from pathlib import Path

import tomllib

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
project = project["project"]
requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values()
                                          for r in extra]
pins = []
for name in sys.argv[1:]:
    bounds = [m.group(1) for r in requirements
              if (m := re.match(rf"{re.escape(name)}\s*(?:\[[^\]]*\])?\s*>=\s*([\w.]+)", r))]
    if not bounds:
        raise SystemExit(f"pyproject.toml gives {name} no lower bound (>=)")
    version = bounds[0]
    pins.append(f"{name}=={version}.0" if version.count(".") == 1 else f"{name}=={version}")
print(" ".join(pins))
