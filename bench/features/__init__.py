"""bench/features: market_features 1.2's O(1) streaming window vs 1.1's FeatureWindow and the
batch path, per bar, on the shipped one-minute klines."""
