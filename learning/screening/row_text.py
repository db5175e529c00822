"""The text a screen reads from a row: everything a model would be trained to see.

A screen that read only the response would miss a harmful prompt, and one that read only
the prompt would miss the completion the model learns to write, so all fields are joined.
"""

from __future__ import annotations

from fedswarm.learning.data_files import Row


def row_text(row: Row) -> str:
    """The row's fields as one string, in reading order, separated by newlines."""
    fields = row.fields
    if row.format == "text":
        return str(fields["text"])
    if row.format == "instruction":
        parts = [fields["instruction"], fields.get("input") or "", fields["output"]]
        return "\n".join(p for p in parts if p)
    return "\n".join(str(m["content"]) for m in fields["messages"])
