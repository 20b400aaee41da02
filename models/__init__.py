"""Models: the DAE (denoising set autoencoder) and the title BERT, built on tf.Module / tf.Variable.

Horovod's DistributedGradientTape fails on Keras 3 variables, so the models here are plain tf.Module
code: that choice is made once, here, for the whole project.
"""
