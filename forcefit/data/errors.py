"""One exception type for bad input, always naming file, frame and field."""
from __future__ import annotations


class DataError(ValueError):
    """Bad input data. The message names the file, the frame index and the field at fault."""

    def __init__(self, message: str, file: str | None = None, frame: int | None = None, field: str | None = None):
        self.file, self.frame, self.field = file, frame, field
        where = []
        if file is not None:
            where.append(f"file {file!s}")
        if frame is not None:
            where.append(f"frame {frame}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)
