"""The ``%agh`` line magic and ``%%agh`` cell magic.

Owns: parsing a magic line with the shared grammar, running it on the process-wide host, and
showing the outcome: the Python value, or exactly one JSON document with ``-o json``, or one
error line (never a traceback for a user mistake).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from IPython.core.magic import Magics, line_cell_magic, magics_class

from agh_nb.errors import AghError


@magics_class
class AghMagics(Magics):
    """``%agh session new|prompt|stop|list|status|events|history ...`` and ``%%agh sql``."""

    @line_cell_magic
    def agh(self, line: str, cell: str | None = None) -> Any:
        """Run an agh_nb command; see ``%agh --help``."""
        from agh_nb.api import get_host
        from agh_nb.commands import execute, parse
        from agh_nb.kernel.follow import follow_events

        try:
            args, help_text = parse(line)
            if args is None:
                print(help_text)
                return None
            result = execute(args, get_host(), cell=cell, follow=follow_events)
        except AghError as exc:
            print(f"agh: error: {exc}", file=sys.stderr)
            return None
        if getattr(args, "output", None) == "json":
            print(json.dumps(result.document, indent=2, default=str, ensure_ascii=False))
            return None
        return result.value
