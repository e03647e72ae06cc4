"""Datasets: the embedded synthetic benchmark and one adapter per on-disk ground-truth format.

Every adapter turns its dataset into the normalised :class:`instance_search.groundtruth.GroundTruth`;
:func:`instance_search.datasets.prepare.prepare` picks the adapter named in params.yaml.
"""
