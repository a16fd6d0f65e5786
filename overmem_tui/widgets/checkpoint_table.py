"""The checkpoint table of the watch screen: overmem.table's model in a DataTable.

Rebuilt only when its columns or rows change; otherwise cells are updated in place,
so a new value does not redraw (or scroll) the whole table.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from overmem.table import TableModel, TableRow
from overmem_tui.render import phase_badge

MARKED = "●"
GOLD = "bold #ffd700"
_FIXED = ("mark", "name", "epoch", "phase", "marks")


class CheckpointTable(DataTable):
    _layout: tuple | None = None  # columns, rows and name width as last built

    def selected(self) -> str | None:
        if self.row_count == 0:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:  # an empty or rebuilding table has no cell under the cursor
            return None

    def show(self, model: TableModel | None) -> None:
        if model is None:
            self.clear(columns=True)
            self._layout = None
            return
        layout = (tuple(c.key for c in model.columns), tuple(r.name for r in model.rows), model.name_width)
        if layout != self._layout:
            self._rebuild(model)
            self._layout = layout
            return
        keys = _FIXED + tuple(c.key for c in model.columns)
        for row in model.rows:
            for key, value in zip(keys, cells(row)):
                self.update_cell(row.name, key, value)

    def _rebuild(self, model: TableModel) -> None:
        keep = self.selected()
        self.clear(columns=True)
        # fixed widths from the content: auto-sized columns that widen when a long name
        # (a merge) arrives left lines painted at the old width on screen
        self.add_column("", key="mark", width=2)
        self.add_column("checkpoint", key="name", width=model.name_width)
        self.add_column("epoch", key="epoch", width=5)
        self.add_column("phase", key="phase", width=9)  # phase first: visible at 80 columns
        self.add_column("", key="marks", width=3)
        for col in model.columns:
            self.add_column(col.title, key=col.key)
        for row in model.rows:
            self.add_row(*cells(row), key=row.name)
        if keep is not None and keep in {r.name for r in model.rows}:
            self.move_cursor(row=self.get_row_index(keep), animate=False)


def cells(row: TableRow) -> list[Text]:
    style = GOLD if row.recommended else ""
    return [Text(MARKED if row.marked else ""), Text(row.name, style=style), Text(row.epoch, justify="right"),
            phase_badge(row.phase), Text(row.marks, style=GOLD),
            *(Text(cell, justify="right", style=style) for cell in row.cells)]
