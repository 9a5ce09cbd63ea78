"""Model families, training recipes and the tasks' data: what the training loop drives (``registry.TASKS``)."""
