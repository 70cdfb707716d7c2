"""{{name}}: a Cordon plugin in Python.

Build with `make` (componentize-py from PyPI), then copy `{{name}}.wasm` into Cordon's plugins
folder: the tool is served as `{{prefix}}_hello`. `cordon.py` is the helper: `@tool` derives the
input schema from the type hints, `ToolError` is a typed error the caller sees.
"""

from typing import Annotated

# `Tools` is the export componentize-py looks for: re-export it from the helper.
from cordon import Context, Tools, ToolError, log, tool  # noqa: F401


@tool(description="Greets someone by name. Fails with `empty_name` when the name is blank.", read_only=True)
def hello(name: Annotated[str, "Who to greet."], ctx: Context) -> str:
    if not name.strip():
        raise ToolError("empty_name", "the name is blank")
    log.info(f"greeting {name} for {ctx.principal}")
    return f"Hello, {name.strip()}!"
