"""Horovod trainers (``horovodrun -np N python hvd_train/dae.py``, ``hvd_train/title.py``) and the pieces
they share: learning-rate schedule scaled by world size, rank-0 checkpoints, metric averaging."""
