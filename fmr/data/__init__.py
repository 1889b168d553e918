"""Datasets: LFW pairs, the shared-data splits, image-folder and RecordIO readers, packs."""
