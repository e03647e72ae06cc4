"""Word weights: the idf counts the database images only, never the query-only images after them."""

import numpy as np
import pytest

from instance_search.retrieval import bow
from instance_search.errors import InstanceSearchError


def _counts():
    """3 database images, then 2 query-only images (rows 3, 4) holding words the database lacks or has rarely."""
    per_image = [[0, 1, 0], [0], [0, 2],   # database
                 [1, 3, 3], [1, 2, 3]]      # query-only
    words = np.array([w for ws in per_image for w in ws], np.int32)
    offsets = np.concatenate([[0], np.cumsum([len(ws) for ws in per_image])])
    return bow.counts_matrix(words, offsets, 4)


def test_idf_is_computed_over_the_database_rows_only():
    counts = _counts()
    assert counts.shape == (5, 4)
    idf = bow.word_weights(counts, 3, "tfidf")
    # N = 3 database images; df over rows 0..2: word 0 in 3, word 1 in 1, word 2 in 1, word 3 in none (-> 1).
    # Counting the query-only rows too would give N = 5 and df = (3, 3, 2, 2).
    np.testing.assert_allclose(idf, [np.log(3 / 3), np.log(3 / 1), np.log(3 / 1), np.log(3 / 1)], rtol=1e-6)
    assert idf.dtype == np.float32
    # the query-only rows change nothing: the same weights as from the database rows alone
    np.testing.assert_array_equal(idf, bow.word_weights(counts[:3], 3, "tfidf"))
    # all five as database images: another idf (the test above would catch a mix-up)
    assert not np.allclose(bow.word_weights(counts, 5, "tfidf"), idf)


def test_tf_weights_are_ones_and_unknown_weighting_is_named():
    assert bow.word_weights(_counts(), 3, "tf").tolist() == [1, 1, 1, 1]
    with pytest.raises(InstanceSearchError, match="encode.weighting='bm25'"):
        bow.word_weights(_counts(), 3, "bm25")
