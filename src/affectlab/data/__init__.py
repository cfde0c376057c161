"""Label schema, dataset readers, synthetic faces, transforms and samplers."""
