"""Training: the loop behind `python train.py`, on one GPU, several (torchrun) or CPU.

    from fmr.train import TrainConfig, train
    result = train(TrainConfig(backbone="iresnet18", data="data/shared-pack", epochs=20))

Modules: `config` (TrainConfig, config files), `data` (batches on the device), `augment`
(batched GPU augmentation), `validation` (pair accuracy, calibration), `loop` (the loop),
`schedule` (warmup + polynomial decay), `state` (resumable checkpoints), `distributed`
(torchrun/DDP), `runlog` (JSONL, CSV, TensorBoard), `cli` (train.py's flags).
This package imports no dlib, facenet-pytorch or streamlit: the GPU machine has none of them.
"""

from fmr.train.config import TrainConfig


def train(config: TrainConfig):
    """Run training (see `fmr.train.loop.train`)."""
    from fmr.train.loop import train as run

    return run(config)


__all__ = ["TrainConfig", "train"]
