"""Data formats: LFW pairs, the shared-data splits, image-folder and RecordIO readers, packs.

Formats only: building a pack from photos (detect, align, mask) is a pipeline,
`fmr.pipelines.prepare`.
"""
