"""The retrieval core: the maths of ranking, one concept a module, each formula written once.

similarity (cosine, weighted cosine), ranking (sort, re-order, group by image), geometry (boxes,
window grids), linalg (L2, PCA-whitening), vocabulary (k-means words, tf-idf), windows (best
sliding window), expansion (average query expansion). Nothing here imports from a higher layer.
"""
