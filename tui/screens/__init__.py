"""One module per sidebar section; every section screen subclasses :class:`~tui.screens.base.SectionScreen`."""
