"""The napari face: reader, writer, sample data, dock widgets and workers (Qt lives only here)."""
