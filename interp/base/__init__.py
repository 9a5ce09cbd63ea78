"""Plumbing every layer uses: atomic files and locks, the allocator, progress bars, HTML page pieces,
the notebook renderer."""
