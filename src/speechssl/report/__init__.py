"""What a job shows its user: the Markdown report (:mod:`.markdown`), its tables and PNG
plots, a module per job; :mod:`.plots` is the one place that selects matplotlib's Agg backend."""
