"""The codebook's sample: database images only; the query-only images at the end of the store never enter it."""

import numpy as np
import pytest

from instance_search.methods.bow_index import sample_descriptors
from instance_search.errors import InstanceSearchError
from instance_search.features.store import FeatureStore, build_store

# features per image: 3 database images, then 3 query-only images with many features (a sample of the
# whole store would almost surely draw some)
N_FEATURES = [2, 3, 1, 40, 40, 40]
N_DATABASE = 3


def _features(shard):
    return shard["xy"], shard["desc"].astype(np.float32), shard["offsets"]


@pytest.fixture(params=[2, 4], ids=["shards-of-2", "shards-of-4"])
def store(request, tmp_path):
    """Descriptors of image i are all i (so a sampled row names its image); shards of 2 or 4 images, so the
    last database image (2) shares a shard with the first query-only image (3)."""
    def extract(i):
        n = N_FEATURES[i]
        return np.zeros((n, 2), np.float32), np.full((n, 4), i, np.uint8)

    build_store(tmp_path / "features", len(N_FEATURES), extract, shard_size=request.param, config={"test": 1})
    return FeatureStore(tmp_path / "features")


def test_sample_never_holds_query_only_features(store):
    db_total = sum(N_FEATURES[:N_DATABASE])  # 6
    # asking for more than the database holds: exactly every database feature, none of the query-only ones
    everything = sample_descriptors(store, N_DATABASE, 1000, 0, _features)
    assert everything.dtype == np.float32 and everything.shape == (db_total, 4)
    assert sorted(everything[:, 0].tolist()) == [0, 0, 1, 1, 1, 2]
    for seed in range(20):
        part = sample_descriptors(store, N_DATABASE, 4, seed, _features)
        assert part.shape == (4, 4) and set(part[:, 0].tolist()) <= {0, 1, 2}, seed
        assert (part == part[:, :1]).all()  # whole rows, not mixed
    # the same call is the same sample (seeded)
    np.testing.assert_array_equal(sample_descriptors(store, N_DATABASE, 4, 7, _features),
                                  sample_descriptors(store, N_DATABASE, 4, 7, _features))


def test_database_without_features_is_an_error_naming_the_store(tmp_path):
    def extract(i):  # only the query-only image has features
        n = 5 if i == 2 else 0
        return np.zeros((n, 2), np.float32), np.ones((n, 4), np.uint8)

    build_store(tmp_path / "f", 3, extract, shard_size=2, config={})
    with pytest.raises(InstanceSearchError, match="no local features"):
        sample_descriptors(FeatureStore(tmp_path / "f"), 2, 10, 0, _features)
