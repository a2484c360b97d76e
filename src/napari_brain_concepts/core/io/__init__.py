"""Readers and writers: study folder, NSD, NIfTI volumes, results store."""
