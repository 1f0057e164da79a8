"""Labeling: dataset formats (import/export), and the labeling queue, box proposals and panel."""
