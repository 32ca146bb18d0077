"""The commands of README.md, as a user would copy them: the shell lines of its ``bash`` blocks
(continuation lines joined, trailing comments dropped) and its ``python`` blocks."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
_FENCE = re.compile(r"^```(\w*)\s*$")


def blocks(language: str, text: str | None = None) -> list[str]:
    """The bodies of the README's fenced blocks in one language."""
    text = README.read_text() if text is None else text
    found, body, current = [], [], None
    for line in text.splitlines():
        fence = _FENCE.match(line.strip())
        if fence and current is None:
            current, body = fence.group(1), []
        elif line.strip() == "```" and current is not None:
            if current == language:
                found.append("\n".join(body))
            current = None
        elif current is not None:
            body.append(line)
    return found


def commands(text: str | None = None) -> list[str]:
    """Every shell command of the README's bash blocks, one string each (comments dropped)."""
    out = []
    for block in blocks("bash", text):
        pending = ""
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            pending = f"{pending}\n{line}" if pending else line
            try:
                words = shlex.split(pending, comments=True)
            except ValueError:  # a quote still open: the command goes on on the next line
                continue
            if words:
                out.append(shlex.join(words))
            pending = ""
    return out
