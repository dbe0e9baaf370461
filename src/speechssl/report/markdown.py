"""A run report: one Markdown file with its PNG plots beside it."""

from __future__ import annotations

from pathlib import Path


class Report:
    """Collects sections and writes ``report.md`` in ``folder`` (plots are saved there too)."""

    def __init__(self, folder: str | Path, title: str):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.lines = [f"# {title}", ""]

    def heading(self, text: str, level: int = 2) -> None:
        self.lines += ["#" * level + " " + text, ""]

    def text(self, text: str) -> None:
        self.lines += [text, ""]

    def table(self, header: list[str], rows: list[list]) -> None:
        self.lines.append("| " + " | ".join(header) + " |")
        self.lines.append("|" + "|".join("---" for _ in header) + "|")
        for r in rows:
            self.lines.append("| " + " | ".join(_cell(x) for x in r) + " |")
        self.lines.append("")

    def image(self, path: str | Path, caption: str) -> None:
        rel = Path(path).resolve().relative_to(self.folder.resolve())
        self.lines += [f"![{caption}]({rel.as_posix()})", ""]

    def write(self) -> Path:
        out = self.folder / "report.md"
        out.write_text("\n".join(self.lines))
        return out


def _cell(x) -> str:
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.0f}"
    return str(x)
