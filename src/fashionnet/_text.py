"""Text that came from a file or a folder listing, made safe to show: imports nothing of
fashionnet, so the CLI, the report and the model card share one rule."""

from __future__ import annotations


def shown(text: object) -> str:
    """`text` as a terminal or a Markdown file may show it: control characters (escape
    sequences that could retitle or clear the terminal, newlines that would break a table row)
    written as \\x.. escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
