"""Console data apart from any widget: the Traffic buffer and filter, the limits view and its poller."""
