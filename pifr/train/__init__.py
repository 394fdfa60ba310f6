"""TP-GAN training: losses, data pipelines and the training loop. Kept out of the inference
import path: nothing in ``pifr`` imports this package. Imports neither facenet-pytorch nor
dlib, so it runs on machines that have only torch."""
