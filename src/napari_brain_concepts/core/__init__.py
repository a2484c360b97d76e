"""The science of napari-brain-concepts. Never imports Qt or napari."""
