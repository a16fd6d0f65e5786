"""A thin widget over a prepared Plot: set it with replot(), it draws at its size."""

from __future__ import annotations

from textual.widget import Widget

from overmem_tui.plotting import Plot, PlotRenderable


class PlotView(Widget):
    DEFAULT_CSS = "PlotView { height: 1fr; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.plot: Plot | None = None

    def replot(self, plot: Plot | None) -> None:
        if plot != self.plot:
            self.plot = plot
            self.refresh()

    def render(self):
        if self.plot is None or not self.plot.series:
            return "no evaluated metrics yet"
        return PlotRenderable(self.plot, height=self.size.height)
